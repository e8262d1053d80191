"""Prometheus metrics, scraped from the running operator."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, ready_with

pytestmark = pytest.mark.controlplane


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


METRICS_PORT = free_port()
OPERATOR_SETTINGS = {"METRICS_PORT": str(METRICS_PORT), "METRICS_ADDRESS": "127.0.0.1", "REFRESH_INTERVAL": "2s"}


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_passes_requests_and_drift(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    desired, intruder = digest(repository + "/desired"), digest(repository + "/intruder")
    for manifest, tag in ((desired, "build-1"), (intruder, "build-2")):
        quay.add_manifest(repository, manifest)
        quay.move_tag(repository, tag, manifest)
    before = scrape()

    cluster.apply_tag("measured", repository, "measured", desired)
    cluster.wait_for("measured", ready_with("True", "InSync"))
    quay.move_tag(repository, "measured", intruder)
    cluster.wait_for_event("measured", "DriftCorrected")
    quay.add_fault(status=429, body="<html>slow down</html>", headers={"Retry-After": "1"}, count=1)
    time.sleep(3)
    after = scrape()

    assert value(after, "quay_tag_operator_passes_total", reason="InSync") > value(
        before, "quay_tag_operator_passes_total", reason="InSync"
    )
    # The first sync is a PUT; the drift correction restores the digest from the tag's history.
    assert value(after, "quay_tag_operator_quay_requests_total", method="PUT", status="201") >= 1
    assert value(after, "quay_tag_operator_quay_requests_total", method="POST", status="200") >= 1
    assert value(after, "quay_tag_operator_quay_requests_total", method="GET", status="200") >= 3
    assert value(after, "quay_tag_operator_quay_request_duration_seconds_count", method="GET") >= 3
    assert value(after, "quay_tag_operator_drift_corrections_total") >= 1
    assert value(after, "quay_tag_operator_rate_limited_total") >= 1
    # The 429 turned the resource to RateLimited until its next pass.
    counted = value(after, "quay_tag_operator_resources", reason="InSync") + value(
        after, "quay_tag_operator_resources", reason="RateLimited"
    )
    assert counted >= 1
