"""Shared fixtures.

Tests marked ``@pytest.mark.controlplane`` run against one local etcd and kube-apiserver
for the whole session. The first run builds them from controlplane/go.mod, which takes
minutes. Select ``-m "not controlplane"`` to skip those tests.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator

import kubernetes
import pytest

from quay_tag_testing.controlplane.build import ensure_binaries
from quay_tag_testing.controlplane.server import ControlPlane


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("controlplane") is not None and isinstance(item, pytest.Function):
            if "control_plane" not in item.fixturenames:
                item.fixturenames.append("control_plane")


@pytest.fixture(scope="session")
def control_plane(pytestconfig: pytest.Config) -> Iterator[ControlPlane]:
    """Start one control plane for the session and point KUBECONFIG at its admin kubeconfig."""
    # Show the build progress instead of capturing it, because the first build takes minutes.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    uncaptured = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with uncaptured:
        binaries = ensure_binaries()

    with ControlPlane(binaries) as plane, pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(plane.kubeconfig_path))
        # The kubernetes client reads KUBECONFIG once, when kubernetes.config is
        # imported, and test modules import it before this fixture runs.
        patch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(plane.kubeconfig_path))
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """Create a namespace named after the test, with a random suffix, and return its name.

    Namespaces are not deleted, because without kube-controller-manager a deleted
    namespace stays in Terminating.
    """
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50].rstrip("-")
    name = f"{base or 'test'}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    return name
