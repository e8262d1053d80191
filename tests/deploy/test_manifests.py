"""The rendered overlays: server-side validation and the RBAC they grant."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from quay_tag_testing.controlplane.server import ControlPlane

from .conftest import OVERLAYS, render

pytestmark = pytest.mark.controlplane

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def rules(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for document in documents if document["kind"] == kind for rule in document.get("rules", [])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_server_dry_run(control_plane: ControlPlane, crd: None, overlay: str) -> None:
    documents = render(control_plane, overlay)
    # A dry run creates nothing, so the namespace must exist before the objects in it validate.
    namespace = next(document for document in documents if document["kind"] == "Namespace")
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))

    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents))

    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(documents), result.stdout
    assert "PodSecurity" not in result.stderr, result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_has_no_wildcards(control_plane: ControlPlane, overlay: str) -> None:
    documents = render(control_plane, overlay)
    all_rules = rules(documents, "ClusterRole") + rules(documents, "Role")

    assert all_rules
    for rule in all_rules:
        assert "*" not in rule.get("verbs", []), rule
        assert "*" not in rule.get("resources", []), rule
        assert "*" not in rule.get("apiGroups", []), rule
        assert "nonResourceURLs" not in rule, rule


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_cluster_wide_secret_writes(control_plane: ControlPlane, overlay: str) -> None:
    documents = render(control_plane, overlay)

    for rule in rules(documents, "ClusterRole"):
        if "secrets" in rule.get("resources", []):
            assert not WRITE_VERBS & set(rule["verbs"]), rule
            assert not {"list", "watch"} & set(rule["verbs"]), rule


def test_namespaced_grants_nothing_cluster_wide(control_plane: ControlPlane) -> None:
    kinds = {document["kind"] for document in render(control_plane, "namespaced")}

    # With -n the operator turns kopf's scanning off, so it lists and watches nothing cluster-wide.
    assert "ClusterRole" not in kinds
    assert "ClusterRoleBinding" not in kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_hardened(control_plane: ControlPlane, overlay: str) -> None:
    deployment = next(document for document in render(control_plane, overlay) if document["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"][:2] == ["--liveness", "http://0.0.0.0:8080/healthz"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_rolls_two_leader_replicas(control_plane: ControlPlane, overlay: str) -> None:
    deployment = next(document for document in render(control_plane, overlay) if document["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    environment = {variable["name"]: variable for variable in container["env"]}
    namespace_source = environment["QUAY_TAG_OPERATOR_LEADER_ELECTION_NAMESPACE"]["valueFrom"]["fieldRef"]

    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert "--leader-election" in container["args"]
    assert namespace_source["fieldPath"] == "metadata.namespace"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_lease_role_in_operator_namespace(control_plane: ControlPlane, overlay: str) -> None:
    documents = render(control_plane, overlay)
    deployment = next(document for document in documents if document["kind"] == "Deployment")
    lease_rules = [
        (document, rule)
        for document in documents
        if document["kind"] in {"Role", "ClusterRole"}
        for rule in document["rules"]
        if "leases" in rule["resources"]
    ]
    verbs = {verb for _, rule in lease_rules for verb in rule["verbs"]}

    assert verbs == {"get", "create", "update"}
    for document, rule in lease_rules:
        assert document["kind"] == "Role"
        assert document["metadata"]["namespace"] == deployment["metadata"]["namespace"]
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == ["quay-tag-operator"]
    role_names = {document["metadata"]["name"] for document, _ in lease_rules}
    bindings = [
        document
        for document in documents
        if document["kind"] == "RoleBinding" and document["roleRef"]["name"] in role_names
    ]
    assert [binding["subjects"][0]["name"] for binding in bindings] == ["quay-tag-operator"]


def test_namespaced_watches_own_namespace(control_plane: ControlPlane) -> None:
    deployment = next(document for document in render(control_plane, "namespaced") if document["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    assert args[-2:] == ["-n", deployment["metadata"]["namespace"]]
