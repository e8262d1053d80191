"""Fixtures for end-to-end tests: the CRD installed, a Quay double, and the operator under KopfRunner."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kopf.testing import KopfRunner

from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, run_operator

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "repositorytags.quaytag.dev.yaml"
TOKEN = "e2e-token"
QUAY_NAMESPACE = "quayadmin"

SEED = {
    "namespaces": [{"name": QUAY_NAMESPACE}],
    "users": [{"name": QUAY_NAMESPACE}, {"name": "reader", "roles": {QUAY_NAMESPACE: "read"}}],
    "tokens": [
        {"token": TOKEN, "user": QUAY_NAMESPACE, "scopes": ["repo:read", "repo:write"]},
        {"token": "reader-token", "user": "reader", "scopes": ["repo:read", "repo:write"]},
    ],
}


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD_PATH))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/repositorytags.quaytag.dev", "--timeout=30s"
    )


@pytest.fixture(scope="module")
def quay() -> Iterator[QuayDouble]:
    with QuayDouble(SEED) as double:
        yield double


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    crd: None,
    quay: QuayDouble,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[KopfRunner]:
    """Run the operator for one test module; a module's OPERATOR_SETTINGS add QUAY_TAG_OPERATOR_* variables."""
    token_file = tmp_path_factory.mktemp("operator") / "token"
    token_file.write_text(TOKEN + "\n")
    # No limit of requests per second: tests that create many resources would wait on it. Tests of the
    # limit set it in OPERATOR_SETTINGS.
    settings = {
        "QUAY_URL": quay.url,
        "TOKEN_FILE": str(token_file),
        "HISTORY_LIMIT": "10",
        "MAX_REQUESTS_PER_SECOND": "0",
    }
    settings.update(getattr(request.module, "OPERATOR_SETTINGS", {}))
    with run_operator(settings) as runner:
        yield runner


@pytest.fixture
def repository(quay: QuayDouble) -> str:
    """Create a fresh Quay repository for one test and return ``namespace/name``."""
    name = f"{QUAY_NAMESPACE}/app-{secrets.token_hex(4)}"
    quay.add_manifest(name, digest(name + "/seed"))
    return name


@pytest.fixture
def cluster(control_plane: ControlPlane, namespace: str, operator: KopfRunner) -> Cluster:
    return Cluster(control_plane, namespace)
