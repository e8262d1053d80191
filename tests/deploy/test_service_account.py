"""Run the operator as the overlays' service account, with only the RBAC that they grant.

Each test installs an overlay's Namespace, ServiceAccount and RBAC into a namespace of its
own. Cluster-scoped names get a suffix, so the two overlays never share rights. The test then
mints a token for the service account and runs the operator with a kubeconfig for that token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

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


def operator_args(documents: list[dict[str, Any]], namespace: str) -> list[str]:
    """Return kopf arguments with the watch scope that the overlay's Deployment passes."""
    deployment = next(document for document in documents if document["kind"] == "Deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    scope = ["--all-namespaces"]
    if "-n" in args:
        assert args[args.index("-n") + 1] == OPERATOR_NAMESPACE
        scope = ["--namespace", namespace]
    return ["run", "--standalone", "--verbose", *scope, "-m", "quay_tag_operator.handlers"]


def deployment_container_args(documents: list[dict[str, Any]]) -> list[str]:
    deployment = next(document for document in documents if document["kind"] == "Deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


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


@contextlib.contextmanager
def operator_as(plane: ControlPlane, quay: QuayDouble, overlay: str, workdir: Path) -> Iterator[tuple[str, KopfRunner]]:
    """Run the operator as an overlay's service account, and yield its namespace and the runner.

    The runner's output can be read only after the block ends, when the operator has stopped.
    """
    namespace, kubeconfig = install_identity(plane, overlay, workdir)
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(kubeconfig))
        # kopf and the operator load the kubeconfig through the kubernetes client, which
        # reads KUBECONFIG only once, at import.
        patch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        patch.setenv("QUAY_TAG_OPERATOR_QUAY_URL", quay.url)
        patch.setenv("QUAY_TAG_OPERATOR_TOKEN_FILE", str(token_file))
        if "--leader-election" in deployment_container_args(render(plane, overlay)):
            # The Deployment puts the Lease in the pod's namespace, which is the identity's namespace here.
            patch.setenv("QUAY_TAG_OPERATOR_LEADER_ELECTION", "true")
            patch.setenv("QUAY_TAG_OPERATOR_LEADER_ELECTION_NAMESPACE", namespace)
        with KopfRunner(operator_args(render(plane, overlay), namespace), timeout=60) as runner:
            yield namespace, runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


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
    with operator_as(control_plane, quay, "cluster-wide", tmp_path) as (operator_namespace, runner):
        assert namespace != operator_namespace
        event = reconcile_one(control_plane, quay, namespace)
        wait_for_lease_renewal(control_plane, operator_namespace)

    # The operator released the Lease when it stopped.
    assert lease_spec(control_plane, operator_namespace).get("holderIdentity", "") == ""
    assert event["source"]["component"] == "quay-tag-operator"
    assert "Moved tag prod" in runner.output
    assert "Forbidden" not in runner.output
    assert "Not enough permissions" not in runner.output


def test_namespaced_reconciles_own_namespace(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, tmp_path: Path
) -> None:
    with operator_as(control_plane, quay, "namespaced", tmp_path) as (operator_namespace, runner):
        event = reconcile_one(control_plane, quay, operator_namespace)
        wait_for_lease_renewal(control_plane, operator_namespace)

    assert lease_spec(control_plane, operator_namespace).get("holderIdentity", "") == ""
    assert event["source"]["component"] == "quay-tag-operator"
    assert "Moved tag prod" in runner.output
    assert "Forbidden" not in runner.output
