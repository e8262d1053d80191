"""Run the operator as the overlays' service account, with only the RBAC that they grant.

Each test installs an overlay's Namespace, ServiceAccount and RBAC into a namespace of its
own. Cluster-scoped names get a suffix, so the two overlays never share rights. The test then
mints a token for the service account and runs ``python -m quay_tag_operator`` with the
arguments and environment of the overlay's Deployment and a kubeconfig for that token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from quay_tag_testing.controlplane.process import kill_when_parent_exits
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import QUAY_NAMESPACE, TOKEN, render

pytestmark = pytest.mark.controlplane

OPERATOR_NAMESPACE = "quay-tag-operator"
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def relocate(document: dict[str, Any], namespace: str, suffix: str) -> dict[str, Any]:
    """Move an object of an overlay from the quay-tag-operator namespace into ``namespace``.

    Cluster-scoped names get ``suffix``, so that one test's ClusterRoleBinding grants
    nothing to another test's service account.
    """
    relocated: dict[str, Any] = json.loads(json.dumps(document))
    metadata = relocated["metadata"]
    if relocated["kind"] == "Namespace":
        metadata["name"] = namespace
    if "namespace" in metadata:
        metadata["namespace"] = namespace
    for subject in relocated.get("subjects", []):
        subject["namespace"] = namespace
    if relocated["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
        metadata["name"] += f"-{suffix}"
    if relocated["kind"] == "ClusterRoleBinding":
        relocated["roleRef"]["name"] += f"-{suffix}"
    return relocated


def install_identity(
    plane: ControlPlane,
    overlay: str,
    workdir: Path,
    edit_rbac: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> tuple[str, Path]:
    """Install the overlay's RBAC in a new namespace, and return that namespace and a kubeconfig for its service account.

    ``edit_rbac`` may change the relocated RBAC objects before they are applied.
    """
    suffix = secrets.token_hex(3)
    namespace = f"operator-{overlay}-{suffix}"
    documents = [relocate(document, namespace, suffix) for document in render(plane, overlay)]
    rbac = [document for document in documents if document["kind"] in RBAC_KINDS]
    if edit_rbac is not None:
        rbac = edit_rbac(rbac)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))

    token = plane.kubectl("create", "token", OPERATOR_NAMESPACE, "-n", namespace, "--duration=1h").stdout.strip()
    kubeconfig = workdir / f"{namespace}.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "test", "cluster": {"server": plane.server_url, "certificate-authority": str(plane.ca_path)}}
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    kubeconfig.chmod(0o600)
    return namespace, kubeconfig


def deployment_args(args: list[str], namespace: str, liveness: str | None) -> list[str]:
    """Return the Deployment's arguments with ``namespace`` for ``-n`` and ``liveness`` as the health endpoint.

    The pod's endpoint listens on 0.0.0.0, and the tests listen on 127.0.0.1 only. With
    ``liveness`` None, the health endpoint is left out.
    """
    result = []
    words = iter(args)
    for word in words:
        if word == "--liveness":
            next(words)
            if liveness is not None:
                result += [word, liveness]
        elif word in ("-n", "--namespace"):
            assert next(words) == OPERATOR_NAMESPACE
            result += [word, namespace]
        else:
            result.append(word)
    return result


def deployment_environment(variables: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """Return the Deployment's environment; a value taken from the pod's namespace gets ``namespace``."""
    environment = {}
    for variable in variables:
        if "value" in variable:
            environment[variable["name"]] = str(variable["value"])
        elif variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            environment[variable["name"]] = namespace
    return environment


@contextlib.contextmanager
def operator_process(
    plane: ControlPlane,
    quay: QuayDouble,
    overlay: str,
    namespace: str,
    kubeconfig: Path,
    workdir: Path,
    liveness: str | None = None,
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """Run ``python -m quay_tag_operator`` as the overlay's Deployment does; yield its log file and process.

    The arguments and environment are the Deployment's, plus ``--verbose``. The Quay URL and the
    token file point at the Quay double, and the process stops with SIGTERM, as a pod does, when
    the block ends.
    """
    deployment = next(document for document in render(plane, overlay) if document["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    command = [
        sys.executable, "-m", "quay_tag_operator", *deployment_args(container["args"], namespace, liveness),
        "--verbose",
    ]
    log_path = workdir / f"{namespace}.log"
    # Settings of the test run's own environment would change what the Deployment sets.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("QUAY_TAG_OPERATOR_")}
    environment.update(deployment_environment(container.get("env", []), namespace))
    environment.update(
        {"KUBECONFIG": str(kubeconfig), "QUAY_TAG_OPERATOR_QUAY_URL": quay.url,
         "QUAY_TAG_OPERATOR_TOKEN_FILE": str(token_file)}
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment,
            preexec_fn=kill_when_parent_exits,
        )
    try:
        yield log_path, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def health_status(url: str) -> int:
    """Return the HTTP status of the health endpoint, or 0 while it accepts no connection."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except OSError:
        return 0


def lease_spec(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    """Return the spec of the leader election Lease in ``namespace``, or {} while it does not exist."""
    result = plane.kubectl("get", "lease", "quay-tag-operator", "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    spec: dict[str, Any] = json.loads(result.stdout)["spec"]
    return spec


def wait_for_lease_renewal(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    """Wait until the operator has created the Lease and renewed it once, which needs get, create and update."""
    return poll(  # type: ignore[no-any-return]
        "a renewed Lease",
        lambda: lease_spec(plane, namespace),
        lambda spec: bool(spec.get("holderIdentity")) and spec.get("renewTime") != spec.get("acquireTime"),
    )


def poll(description: str, read: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{description} not reached in {timeout} s; last value: {json.dumps(value, indent=2)}")
        time.sleep(0.3)


def ready_in_sync(body: dict[str, Any]) -> bool:
    conditions = body.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" and c["reason"] == "InSync" for c in conditions)


@dataclass
class OperatorRun:
    """One operator process run as an overlay's service account."""

    namespace: str
    log_path: Path
    liveness_url: str

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def operator_as(plane: ControlPlane, quay: QuayDouble, overlay: str, workdir: Path) -> Iterator[OperatorRun]:
    """Run the operator as an overlay's service account and Deployment; check that it stops cleanly."""
    namespace, kubeconfig = install_identity(plane, overlay, workdir)
    liveness_url = f"http://127.0.0.1:{free_port()}/healthz"
    with operator_process(plane, quay, overlay, namespace, kubeconfig, workdir, liveness_url) as (log_path, process):
        run = OperatorRun(namespace, log_path, liveness_url)
        yield run
    assert process.returncode == 0, run.output[-3000:]
    assert "Traceback" not in run.output, run.output[-3000:]


def reconcile_one(plane: ControlPlane, quay: QuayDouble, namespace: str) -> dict[str, Any]:
    """Create a RepositoryTag in ``namespace``, wait until it is in sync and return its TagMoved Event."""
    repository = f"{QUAY_NAMESPACE}/app-{secrets.token_hex(4)}"
    digest = "sha256:" + hashlib.sha256(repository.encode()).hexdigest()
    # The image is pushed: its manifest is alive under another tag, so the operator moves the tag.
    quay.add_manifest(repository, digest)
    quay.move_tag(repository, "build", digest)
    manifest = {
        "apiVersion": "quaytag.dev/v1alpha1",
        "kind": "RepositoryTag",
        "metadata": {"name": "deployed", "namespace": namespace},
        "spec": {"repository": repository, "tag": "prod", "manifestDigest": digest},
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def read() -> dict[str, Any]:
        output = plane.kubectl("get", "repositorytag", "deployed", "-n", namespace, "-o", "json").stdout
        result: dict[str, Any] = json.loads(output)
        return result

    poll("Ready=True InSync", read, ready_in_sync)
    assert quay.alive_digest(repository, "prod") == digest

    def events() -> list[dict[str, Any]]:
        output = plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=deployed", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(output)["items"]
        return items

    found = poll("a TagMoved Event", events, lambda items: any(item["reason"] == "TagMoved" for item in items))
    return next(item for item in found if item["reason"] == "TagMoved")


def test_cluster_wide_reconciles_other_namespace(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, namespace: str, tmp_path: Path
) -> None:
    with operator_as(control_plane, quay, "cluster-wide", tmp_path) as run:
        assert namespace != run.namespace
        event = reconcile_one(control_plane, quay, namespace)
        wait_for_lease_renewal(control_plane, run.namespace)
        assert poll("a healthy liveness endpoint", lambda: health_status(run.liveness_url), lambda status: status == 200)

    # The operator released the Lease when it stopped.
    assert lease_spec(control_plane, run.namespace).get("holderIdentity", "") == ""
    assert event["source"]["component"] == "quay-tag-operator"
    assert "Moved tag prod" in run.output
    assert "Forbidden" not in run.output
    assert "Not enough permissions" not in run.output


def test_namespaced_reconciles_own_namespace(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, tmp_path: Path
) -> None:
    with operator_as(control_plane, quay, "namespaced", tmp_path) as run:
        event = reconcile_one(control_plane, quay, run.namespace)
        wait_for_lease_renewal(control_plane, run.namespace)
        assert poll("a healthy liveness endpoint", lambda: health_status(run.liveness_url), lambda status: status == 200)

    assert lease_spec(control_plane, run.namespace).get("holderIdentity", "") == ""
    assert event["source"]["component"] == "quay-tag-operator"
    assert "Moved tag prod" in run.output
    # The overlay has no ClusterRole, so any list or watch of namespaces or CRDs would be refused.
    assert "Forbidden" not in run.output
    assert "Not enough permissions" not in run.output
