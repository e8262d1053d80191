"""Fixtures for the install manifests: the rendered overlays, the CRD and a Quay double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "repositorytags.quaytag.dev.yaml"
OVERLAYS = ("cluster-wide", "namespaced")
TOKEN = "deploy-token"
QUAY_NAMESPACE = "quayadmin"

SEED = {
    "namespaces": [{"name": QUAY_NAMESPACE}],
    "users": [{"name": QUAY_NAMESPACE}],
    "tokens": [{"token": TOKEN, "user": QUAY_NAMESPACE, "scopes": ["repo:read", "repo:write"]}],
}


def render(plane: ControlPlane, overlay: str) -> list[dict[str, Any]]:
    """Return the objects that ``kubectl kustomize deploy/overlays/OVERLAY`` renders."""
    output = plane.kubectl("kustomize", str(ROOT / "deploy" / "overlays" / overlay)).stdout
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(CRD_PATH))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/repositorytags.quaytag.dev", "--timeout=30s")


@pytest.fixture(scope="module")
def quay() -> Iterator[QuayDouble]:
    with QuayDouble(SEED) as double:
        yield double
