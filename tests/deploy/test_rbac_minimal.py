"""The overlays' RBAC grants nothing the operator can do without.

For each overlay, each rule, each resource and each verb, the test installs the RBAC without
that one grant, runs the operator as the overlay's ServiceAccount, the way the Deployment runs
it (``python -m quay_tag_operator``, with ``-n`` for the namespaced overlay), and checks that
something the operator must do fails. The probes cover everything it does in the cluster:
reconcile a resource and write its status, post an Event, read a token Secret and a CA bundle
ConfigMap, add the finalizer of a resource with deletionPolicy Delete, keep its Lease, make no
request that the API server refuses, and keep running.

Each run lasts between MIN_RUN_SECONDS and PROBE_TIMEOUT. The namespaced runs watch one
namespace each, so they run side by side. The cluster-wide runs each watch every namespace,
so they run one after another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from quay_tag_testing.controlplane.certs import CertificateAuthority
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import OVERLAYS, QUAY_NAMESPACE, TOKEN, render
from .test_service_account import install_identity, operator_process

pytestmark = pytest.mark.controlplane

ROLE_KINDS = {"Role", "ClusterRole"}
# Seconds a reduced run waits for all probes before it counts the missing ones as failed. The
# full RBAC passed every probe in 4 s (namespaced) and 15 s (cluster-wide) on 2 shared cores.
PROBE_TIMEOUT = 30.0
# Seconds every run lasts at least, so that a refused Lease renewal shows: the leader gives up
# 10 s (its renew deadline) after the last renewal that succeeded.
MIN_RUN_SECONDS = 20.0
# Namespaced runs at once; each is one operator process.
PARALLEL_RUNS = 4
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
PROBES = (
    "reconciled",
    "status written",
    "event posted",
    "secret read",
    "config map read",
    "finalizer added",
    "no request forbidden",
    "operator kept running",
)


@dataclass(frozen=True)
class Grant:
    """One verb on one resource, granted by one rule of one Role or ClusterRole."""

    kind: str
    role: str
    rule: int
    api_group: str
    resource: str
    verb: str
    resource_names: tuple[str, ...] = ()

    def __str__(self) -> str:
        group = self.api_group or "core"
        names = f" named {', '.join(self.resource_names)}" if self.resource_names else ""
        return f"{self.kind} {self.role} rule {self.rule}: {self.verb} {self.resource}{names} ({group})"

    def granted_by(self, document: dict[str, Any]) -> bool:
        name: str = document["metadata"]["name"]
        if document["kind"] != self.kind:
            return False
        # Relocation adds "-SUFFIX" to the names of cluster-scoped objects.
        return name.rsplit("-", 1)[0] == self.role if self.kind == "ClusterRole" else name == self.role

    def as_rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"apiGroups": [self.api_group], "resources": [self.resource], "verbs": [self.verb]}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


def grants(documents: list[dict[str, Any]]) -> list[Grant]:
    found = []
    for document in documents:
        if document["kind"] not in ROLE_KINDS:
            continue
        for index, rule in enumerate(document.get("rules", [])):
            for api_group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        name = document["metadata"]["name"]
                        names = tuple(rule.get("resourceNames", []))
                        found.append(Grant(document["kind"], name, index, api_group, resource, verb, names))
    return found


def without(removed: Grant) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Return an edit that drops one grant, keeping every other one as a rule of its own."""

    def edit(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        edited = []
        for document in documents:
            if document["kind"] in ROLE_KINDS:
                kept = [
                    grant
                    for grant in grants([document])
                    if not (removed.granted_by(document) and _same_rule_grant(grant, removed))
                ]
                rules = [grant.as_rule() for grant in kept]
                document = {**document, "rules": rules}
            edited.append(document)
        return edited

    return edit


def _same_rule_grant(grant: Grant, removed: Grant) -> bool:
    return (grant.rule, grant.api_group, grant.resource, grant.verb) == (
        removed.rule, removed.api_group, removed.resource, removed.verb
    )


@dataclass
class Probes:
    """The resources and objects one run creates in the namespace its operator watches."""

    namespace: str
    repository: str
    digest: str


def create_probes(plane: ControlPlane, quay: QuayDouble, namespace: str, ca_pem: str) -> Probes:
    repository = f"{QUAY_NAMESPACE}/rbac-{secrets.token_hex(4)}"
    digest = "sha256:" + hashlib.sha256(repository.encode()).hexdigest()
    quay.add_manifest(repository, digest)
    quay.move_tag(repository, "build", digest)
    token = base64.b64encode(TOKEN.encode()).decode()

    def tag(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "quaytag.dev/v1alpha1",
            "kind": "RepositoryTag",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"repository": repository, "tag": name, "manifestDigest": digest, **spec},
        }

    objects = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "quay-token", "namespace": namespace, "labels": {"quaytag.dev/token": "true"}},
            "data": {"token": token},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "quay-ca", "namespace": namespace},
         "data": {"ca.crt": ca_pem}},
        tag("plain"),
        tag("with-secret", connection={"tokenSecretRef": {"name": "quay-token", "key": "token"}}),
        tag("with-ca", connection={"caBundleConfigMapRef": {"name": "quay-ca", "key": "ca.crt"}}),
        tag("finalized", deletionPolicy="Delete"),
    ]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    return Probes(namespace, repository, digest)


def passed_probes(plane: ControlPlane, quay: QuayDouble, probes: Probes, log_path: Path) -> set[str]:
    output = plane.kubectl("get", "repositorytags", "-n", probes.namespace, "-o", "json").stdout
    bodies = {item["metadata"]["name"]: item for item in json.loads(output)["items"]}

    def in_sync(name: str) -> bool:
        conditions = bodies.get(name, {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["reason"] == "InSync" for c in conditions)

    passed = set()
    if quay.alive_digest(probes.repository, "plain") == probes.digest:
        passed.add("reconciled")
    if in_sync("plain"):
        passed.add("status written")
    events = plane.kubectl(
        "get", "events", "-n", probes.namespace, "--field-selector", "involvedObject.name=plain", "-o", "json"
    ).stdout
    if any(item["reason"] == "TagMoved" for item in json.loads(events)["items"]):
        passed.add("event posted")
    if in_sync("with-secret") or quay.alive_digest(probes.repository, "with-secret") == probes.digest:
        passed.add("secret read")
    if in_sync("with-ca") or quay.alive_digest(probes.repository, "with-ca") == probes.digest:
        passed.add("config map read")
    if "quaytag.dev/finalizer" in bodies.get("finalized", {}).get("metadata", {}).get("finalizers", []):
        passed.add("finalizer added")
    # kopf retries a refused list or watch with an ERROR line and, for a while, still serves
    # what it read before, so a refused request counts as a failure of its own.
    if "Forbidden" not in log_path.read_text(errors="replace"):
        passed.add("no request forbidden")
    return passed


def run_with(
    plane: ControlPlane, quay: QuayDouble, overlay: str, removed: Grant | None, workdir: Path, ca_pem: str
) -> tuple[set[str], float]:
    """Run the operator under the overlay's RBAC without ``removed`` and return the probes that passed."""
    folder = workdir / secrets.token_hex(4)
    folder.mkdir()
    namespace, kubeconfig = install_identity(plane, overlay, folder, without(removed) if removed else None)
    watched = namespace
    if "cluster-wide" == overlay:
        watched = f"rbac-probes-{secrets.token_hex(3)}"
        plane.kubectl("create", "namespace", watched)
    started = time.monotonic()
    with operator_process(plane, quay, overlay, namespace, kubeconfig, folder) as (log_path, process):
        probes = create_probes(plane, quay, watched, ca_pem)
        while True:
            passed = passed_probes(plane, quay, probes, log_path)
            elapsed = time.monotonic() - started
            if process.poll() is None:
                passed.add("operator kept running")
            else:
                # A crash proves nothing about the RBAC; an orderly stop (a lost Lease) is a failure.
                log = log_path.read_text(errors="replace")
                assert "Traceback" not in log, log[-3000:]
                return passed, elapsed
            if (passed == set(PROBES) and elapsed > MIN_RUN_SECONDS) or elapsed > PROBE_TIMEOUT:
                return passed, elapsed
            time.sleep(0.5)


def test_rbac_has_no_wildcards_or_secret_writes(control_plane: ControlPlane) -> None:
    for overlay in OVERLAYS:
        documents = render(control_plane, overlay)
        for document in documents:
            if document["kind"] not in ROLE_KINDS:
                continue
            for rule in document.get("rules", []):
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(key, []), f"{overlay} {document['metadata']['name']}: wildcard {key}"
                assert not rule.get("nonResourceURLs"), f"{overlay}: nonResourceURLs granted"
                if "secrets" in rule.get("resources", []):
                    assert set(rule["verbs"]) <= {"get"}, f"{overlay}: {rule['verbs']} on secrets"
                    assert not set(rule["verbs"]) & WRITE_VERBS


def test_every_grant_is_needed(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, tmp_path: Path
) -> None:
    ca_pem = CertificateAuthority.generate("quay-tag-operator RBAC test CA").cert_pem.decode()
    started = time.monotonic()
    unnecessary: list[str] = []
    report: list[str] = []

    for overlay in ("namespaced", "cluster-wide"):
        full, seconds = run_with(control_plane, quay, overlay, None, tmp_path, ca_pem)
        assert full == set(PROBES), f"{overlay} with its full RBAC: only {sorted(full)} passed"
        report.append(f"{overlay}, full RBAC: all probes passed in {seconds:.1f} s")

        overlay_grants = grants(render(control_plane, overlay))
        workers = PARALLEL_RUNS if overlay == "namespaced" else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(
                pool.map(lambda grant: run_with(control_plane, quay, overlay, grant, tmp_path, ca_pem), overlay_grants)
            )
        for grant, (passed, _) in zip(overlay_grants, results):
            failed = [probe for probe in PROBES if probe not in passed]
            report.append(f"{overlay}, without {grant}: failed {failed or 'nothing'}")
            if not failed:
                unnecessary.append(f"{overlay}: {grant}")

    elapsed = time.monotonic() - started
    print("\n" + "\n".join(report) + f"\n{len(report)} runs in {elapsed:.0f} s")
    assert unnecessary == [], f"grants the operator does not need: {unnecessary}"
