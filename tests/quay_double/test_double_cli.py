"""The standalone command: start on a free port, write the URL file, serve, stop on a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

DEMO_SEED = Path(__file__).parent.parent.parent / "deploy" / "demo" / "quay-seed.yaml"
STARTUP_TIMEOUT = 10.0


def start_double(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "quay_tag_testing.quay_double", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"the double exited early with {process.returncode}: {stderr}")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {STARTUP_TIMEOUT} s")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_serves_and_stops_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    url_file = tmp_path / "url"
    process = start_double("--seed", str(DEMO_SEED), "--port", "0", "--url-file", str(url_file))
    try:
        url = wait_for_file(url_file, process)
        response = httpx.get(
            url + "/api/v1/repository/quayadmin/busybox/tag/",
            headers={"Authorization": "Bearer demo-token"},
            params={"specificTag": "latest"},
        )
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=STARTUP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert url.startswith("http://127.0.0.1:")
    assert response.status_code == 200
    assert response.json()["tags"][0]["name"] == "latest"
    assert process.returncode == 0
    assert f"Quay test double listening on {url}" in stdout
    assert "Quay test double stopped" in stderr
    assert not url_file.exists()


def test_cli_rejects_missing_seed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quay_tag_testing.quay_double", "--seed", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )

    assert result.returncode == 2
    assert "cannot start the Quay double" in result.stderr
    assert "missing.yaml" in result.stderr


def test_cli_rejects_non_loopback_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quay_tag_testing.quay_double", "--seed", str(DEMO_SEED), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )

    assert result.returncode == 2
    assert "loopback" in result.stderr
