"""The demo command runs from start to finish."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from quay_tag_testing.controlplane.server import ControlPlane

pytestmark = pytest.mark.controlplane


def test_demo_runs_to_the_end(control_plane: ControlPlane) -> None:
    # The session's control plane fixture has built the binaries; the demo starts its own servers.
    environment = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "quay_tag_testing.demo", "--exit"],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "$ kubectl get repositorytags -o wide" in output
    for name in ("alpine-3", "busybox-stable", "busybox-test"):
        assert name in output
    assert output.count("InSync") >= 6
    assert "kubeconfig: " in output
    assert "History of tag test of quayadmin/busybox" in output
