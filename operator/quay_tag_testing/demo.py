"""The demo: a local control plane, the Quay test double and the operator, driven with kubectl.

Run it with ``scripts/demo`` (or ``python -m quay_tag_testing.demo`` inside the
virtualenv). It applies the samples in deploy/examples/, waits for them to become
Ready, shows ``kubectl get repositorytags`` and one tag's history, rolls that tag
back, and keeps everything running until Ctrl-C unless ``--exit`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from quay_tag_testing.controlplane.build import MODULE_DIR, ensure_binaries, kubernetes_version
from quay_tag_testing.controlplane.process import ManagedProcess
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

ROOT = MODULE_DIR.parent
CRD_PATH = ROOT / "crds" / "repositorytags.quaytag.dev.yaml"
EXAMPLES = ROOT / "deploy" / "examples"
SEED_PATH = ROOT / "deploy" / "demo" / "quay-seed.yaml"
DEMO_TOKEN = "demo-token"
ROLLBACK_RESOURCE = "busybox-test"
# An older image of busybox in the demo seed, in the history of tag test.
ROLLBACK_DIGEST = "sha256:28f4f6e6ed2c250a5afdc63773da0bdae4dcfb31e4ada036a3677a5f01e5def7"
READY_TIMEOUT = 120
KUBERNETES_VERSION = kubernetes_version((MODULE_DIR / "go.mod").read_text())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--exit", action="store_true", help="stop everything after the walk-through")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A shell that starts the demo in the background ignores SIGINT for it, so both are set here.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        run(stay=not args.exit)
    except KeyboardInterrupt:
        say("Stopped.")
        sys.exit(130)


def run(*, stay: bool) -> None:
    step("Locating or building etcd, kube-apiserver and kubectl (the first build takes about 5 minutes)")
    binaries = ensure_binaries()

    with contextlib.ExitStack() as stack:
        step("Starting the local control plane on 127.0.0.1")
        plane = stack.enter_context(ControlPlane(binaries))
        os.environ["KUBECONFIG"] = str(plane.kubeconfig_path)
        say(f"kubeconfig: {plane.kubeconfig_path}")

        step(f"Starting the Quay test double, seeded from {SEED_PATH.relative_to(ROOT)}")
        quay = stack.enter_context(QuayDouble(SEED_PATH))
        say(f"Quay test double: {quay.url}  (token {DEMO_TOKEN!r})")

        step("Installing the RepositoryTag CRD")
        show(plane, "apply", "-f", str(CRD_PATH))
        plane.kubectl("wait", "--for=condition=Established", "crd/repositorytags.quaytag.dev", "--timeout=60s")

        step("Starting the operator")
        operator = start_operator(plane, quay.url)
        stack.callback(operator.stop, 10)
        say(f"operator log: {operator.log_path}")

        step(f"Applying the samples in {EXAMPLES.relative_to(ROOT)}/")
        show(plane, "apply", "-f", str(EXAMPLES))
        wait_ready(plane, operator)
        show(plane, "get", "repositorytags", "-o", "wide")
        show_history(plane, ROLLBACK_RESOURCE)

        step(f"Rolling {ROLLBACK_RESOURCE} back to an older digest from its history")
        patch = json.dumps({"spec": {"manifestDigest": ROLLBACK_DIGEST}})
        show(plane, "patch", "repositorytag", ROLLBACK_RESOURCE, "--type=merge", "-p", patch)
        wait_ready(plane, operator, ROLLBACK_RESOURCE)
        show(plane, "get", "repositorytags")
        show_history(plane, ROLLBACK_RESOURCE)
        say(
            "The rollback added the newest row, with reversion=true: the operator used Quay's restore, "
            "because the digest was in the tag's history. The first apply was a PUT (reversion=false)."
        )

        if not stay:
            return
        step("Everything keeps running. Try, from another shell:")
        say(f"  export KUBECONFIG={plane.kubeconfig_path}")
        say(f"  export PATH={binaries.kubectl.parent}:$PATH   # kubectl {KUBERNETES_VERSION}, matching the API server")
        say("  kubectl get repositorytags -o wide")
        say(f"  kubectl describe repositorytag {ROLLBACK_RESOURCE}")
        say(f"  curl -s -H 'Authorization: Bearer {DEMO_TOKEN}' '{quay.url}/api/v1/repository/quayadmin/busybox/tag/'")
        say("Press Ctrl-C to stop the operator, the Quay test double and the control plane.")
        threading.Event().wait()


def start_operator(plane: ControlPlane, quay_url: str) -> ManagedProcess:
    token_file = plane.workdir / "quay-token"
    token_file.write_text(DEMO_TOKEN + "\n")
    token_file.chmod(0o600)
    command = [
        sys.executable,
        "-m",
        "quay_tag_operator",
        "--quay-url",
        quay_url,
        "--token-file",
        str(token_file),
        "--verbose",
    ]
    operator = ManagedProcess("operator", command, plane.workdir / "operator.log")
    operator.start()
    return operator


def wait_ready(plane: ControlPlane, operator: ManagedProcess, name: str | None = None) -> None:
    """Wait until every RepositoryTag (or one) is Ready for its current generation."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        items = list_tags(plane, name)
        pending = [item["metadata"]["name"] for item in items if not is_ready(item)]
        if items and not pending:
            return
        if not operator.is_running():
            raise SystemExit(f"The operator exited with code {operator.exit_code()}:\n{operator.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(
                f"Not Ready after {READY_TIMEOUT} s: {', '.join(pending)}. The operator log ends with:\n"
                + operator.log_tail()
            )
        time.sleep(0.5)


def list_tags(plane: ControlPlane, name: str | None) -> list[dict[str, Any]]:
    if name is not None:
        item: dict[str, Any] = json.loads(plane.kubectl("get", "repositorytag", name, "-o", "json").stdout)
        return [item]
    items: list[dict[str, Any]] = json.loads(plane.kubectl("get", "repositorytags", "-o", "json").stdout)["items"]
    return items


def is_ready(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    if status.get("observedGeneration") != item["metadata"].get("generation"):
        return False
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )


def show_history(plane: ControlPlane, name: str) -> None:
    item = list_tags(plane, name)[0]
    spec, status = item["spec"], item["status"]
    say(f"\nHistory of tag {spec['tag']} of {spec['repository']} (status.history, newest first):")
    say(f"  {'MANIFEST DIGEST':<24} {'START':<21} {'END':<21} REVERSION")
    for row in status.get("history", []):
        short = row["manifestDigest"][:19] + "..."
        say(f"  {short:<24} {row['startTime']:<21} {row.get('endTime', '-'):<21} {row.get('reversion', False)}")


def show(plane: ControlPlane, *args: str) -> None:
    say(f"$ kubectl {shlex.join(args)}")
    output = plane.kubectl(*args).stdout
    say(output.rstrip())


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def say(text: str) -> None:
    print(text, flush=True)


def _interrupt(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
