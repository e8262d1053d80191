"""Restarts under load: the operator killed between Quay's write and the status, and kube-apiserver restarted.

The operator runs here as a real process (``python -m quay_tag_operator``), as in a pod, so
that the test can kill it with SIGKILL. This module uses no KopfRunner, so that no second
operator reconciles the same resources.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quay_tag_testing.controlplane.process import ManagedProcess
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import QUAY_NAMESPACE, TOKEN
from .kube import Cluster, digest, ready, ready_with, tag_rows

pytestmark = pytest.mark.controlplane

# Seconds that the double delays the PUT's response: far longer than the test needs to kill the operator.
HELD_RESPONSE_SECONDS = 60.0


class OperatorProcess:
    """The operator as a child process that logs to one file across restarts."""

    def __init__(self, quay: QuayDouble, workdir: Path, *extra_args: str) -> None:
        token_file = workdir / "token"
        token_file.write_text(TOKEN + "\n")
        self.log_path = workdir / "operator.log"
        command = [
            sys.executable, "-m", "quay_tag_operator", "--quay-url", quay.url, "--token-file", str(token_file),
            "--history-limit", "10", "--verbose", *extra_args,
        ]
        self.process = ManagedProcess("operator", command, self.log_path)

    def start(self) -> None:
        self.process.start()

    def kill(self) -> None:
        """Kill the operator with SIGKILL, so that no clean-up of its own runs, and reap it."""
        pid = self.process.pid
        assert pid is not None and self.process.is_running(), self.log()
        os.kill(pid, signal.SIGKILL)
        self.process.stop(10)

    def stop(self) -> None:
        self.process.stop(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_operator(quay: QuayDouble, workdir: Path, *extra_args: str) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(quay, workdir, *extra_args)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
    assert "Traceback" not in operator.log(), operator.log()


def new_repository(quay: QuayDouble) -> tuple[str, str, str]:
    """Create a repository with ``old`` and ``new`` manifests, both alive under tags of their own."""
    repository = f"{QUAY_NAMESPACE}/restart-{secrets.token_hex(4)}"
    old, new = digest(repository + "/old"), digest(repository + "/new")
    for label, manifest in (("old", old), ("new", new)):
        quay.add_manifest(repository, manifest)
        quay.move_tag(repository, f"build-{label}", manifest)
    return repository, old, new


def writes(quay: QuayDouble, repository: str) -> list[str]:
    return [
        f"{record.method} {record.path.rsplit('/tag/', 1)[1]}"
        for record in quay.requests()
        if record.method != "GET" and f"/repository/{repository}/" in record.path
    ]


def quay_history(quay: QuayDouble, repository: str, tag: str) -> list[dict[str, Any]]:
    """Return the tag's rows in the double, newest first, in the shape of status.history."""
    rows = [row for row in tag_rows(quay, repository) if row["name"] == tag]
    rows.sort(key=lambda row: int(row["start_ms"]), reverse=True)
    return [
        {
            "manifestDigest": row["manifest_digest"],
            "startTime": _rfc3339(row["start_ms"]),
            **({"endTime": _rfc3339(row["end_ms"])} if row["end_ms"] is not None else {}),
            "reversion": row["reversion"],
        }
        for row in rows
    ]


def _rfc3339(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds // 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in row.items() if key != "expiration"}
        for row in body["status"].get("history", [])
    ]


def wait_until(description: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{description} not reached in {timeout} s")
        time.sleep(0.1)


def test_killed_after_put_converges_without_rewrite(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster(control_plane, namespace)
    repository, old, new = new_repository(quay)
    quay.move_tag(repository, "deployed", old)
    # The double applies the PUT and then delays its response, so the operator never receives the outcome.
    quay.add_fault(method="PUT", path=f"/repository/{repository}/tag/deployed$", response_delay=HELD_RESPONSE_SECONDS)
    quay.reset_requests()

    operator = OperatorProcess(quay, tmp_path)
    operator.start()
    try:
        cluster.apply_tag("crashy", repository, "deployed", new)
        wait_until("the PUT applied in Quay", lambda: quay.alive_digest(repository, "deployed") == new, timeout=60)
        operator.kill()
    finally:
        operator.stop()
    killed_log = operator.log()

    # Quay has the write, the resource has no status of it: the kill came in between.
    body = cluster.get("crashy")
    condition = ready(body)
    assert condition is None or condition["reason"] != "InSync", body.get("status")
    assert writes(quay, repository) == ["PUT deployed"]
    assert "Moved tag" not in killed_log
    quay.clear_faults()

    with running_operator(quay, tmp_path) as restarted:
        body = cluster.wait_for("crashy", ready_with("True", "InSync"), timeout=60)
        time.sleep(1)  # a second write, if any, would come right after the first pass
        assert writes(quay, repository) == ["PUT deployed"], restarted.log()

    assert body["status"]["currentDigest"] == new
    assert status_history(body) == quay_history(quay, repository, "deployed")
    assert [row["manifestDigest"] for row in status_history(body)] == [new, old]


def test_apiserver_restart_misses_nothing(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster(control_plane, namespace)
    steady_repository, _, steady_new = new_repository(quay)
    changed_repository, changed_old, changed_new = new_repository(quay)
    doomed_repository, doomed_old, _ = new_repository(quay)
    new_repository_name, _, created_new = new_repository(quay)

    with running_operator(quay, tmp_path, "--refresh-interval", "2s") as operator:
        cluster.apply_tag("steady", steady_repository, "deployed", steady_new)
        cluster.apply_tag("changed", changed_repository, "deployed", changed_old)
        cluster.apply_tag("doomed", doomed_repository, "deployed", doomed_old, deletionPolicy="Delete")
        for name in ("steady", "changed", "doomed"):
            cluster.wait_for(name, ready_with("True", "InSync"), timeout=60)
        steady_version = cluster.get("steady")["metadata"]["resourceVersion"]
        quay.reset_requests()

        started = time.monotonic()
        control_plane.restart_apiserver()
        restart_seconds = time.monotonic() - started

        # Right after the restart: a new resource, a spec change and a deletion.
        cluster.apply_tag("created", new_repository_name, "deployed", created_new)
        cluster.apply_tag("changed", changed_repository, "deployed", changed_new)
        control_plane.kubectl("delete", "repositorytag", "doomed", "-n", namespace, "--wait=false")

        cluster.wait_for("created", ready_with("True", "InSync"), timeout=60)
        cluster.wait_for("changed", ready_with("True", "InSync", generation=2), timeout=60)
        wait_until(
            "the doomed resource gone",
            lambda: control_plane.kubectl("get", "repositorytag", "doomed", "-n", namespace, check=False).returncode
            != 0,
            timeout=60,
        )
        # Several refresh intervals: the steady resource is re-read but never written again.
        time.sleep(5)
        assert operator.process.is_running(), operator.log()

    assert quay.alive_digest(new_repository_name, "deployed") == created_new
    assert quay.alive_digest(changed_repository, "deployed") == changed_new
    assert quay.alive_digest(doomed_repository, "deployed") is None
    assert quay.alive_digest(steady_repository, "deployed") == steady_new
    assert writes(quay, steady_repository) == []
    assert writes(quay, changed_repository) == ["PUT deployed"]
    assert writes(quay, doomed_repository) == ["DELETE deployed"]
    assert writes(quay, new_repository_name) == ["PUT deployed"]
    assert cluster.get("steady")["metadata"]["resourceVersion"] == steady_version
    print(f"\nkube-apiserver restarted in {restart_seconds:.1f} s")
