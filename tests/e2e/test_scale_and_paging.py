"""Many resources against a rate-limited Quay, and a long history read while the tag moves."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, ready_with, repository_tag

pytestmark = pytest.mark.controlplane

OPERATOR_SETTINGS = {"REFRESH_INTERVAL": "2s", "HISTORY_LIMIT": "100"}
STORM_RESOURCES = 300


def ready_reasons(cluster: Cluster) -> dict[str, int]:
    output = cluster.plane.kubectl("get", "repositorytags", "-n", cluster.namespace, "-o", "json").stdout
    counts: dict[str, int] = {}
    for item in json.loads(output)["items"]:
        reason = "none"
        for condition in item.get("status", {}).get("conditions", []):
            if condition["type"] == "Ready":
                reason = f"{condition['status']}/{condition['reason']}"
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def test_rate_limit_storm_recovers(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    image = digest(repository + "/storm")
    quay.add_manifest(repository, image)
    quay.move_tag(repository, "base", image)
    for index in range(STORM_RESOURCES):
        quay.move_tag(repository, f"t{index}", image)
    quay.add_fault(
        path=f"/repository/{repository}/",
        status=429,
        body="<html><body><h1>429 Too Many Requests</h1></body></html>",
        headers={"Retry-After": "3"},
    )
    quay.reset_requests()

    manifests = [repository_tag(f"storm-{index}", repository, f"t{index}", image) for index in range(STORM_RESOURCES)]
    cluster.plane.kubectl(
        "apply", "-n", cluster.namespace, "-f", "-", input=yaml.safe_dump_all(manifests), timeout=120
    )
    deadline = time.monotonic() + 60
    while ready_reasons(cluster).get("False/RateLimited", 0) < STORM_RESOURCES:
        assert time.monotonic() < deadline, ready_reasons(cluster)
        time.sleep(1)

    # Each resource waits Retry-After (3 s) between attempts: over 3 s at most two requests each.
    quay.reset_requests()
    time.sleep(3)
    assert len(quay.requests()) <= STORM_RESOURCES * 2

    quay.clear_faults()
    deadline = time.monotonic() + 90
    while ready_reasons(cluster).get("True/InSync", 0) < STORM_RESOURCES:
        assert time.monotonic() < deadline, ready_reasons(cluster)
        time.sleep(1)
    writes = [record for record in quay.requests() if record.method != "GET"]
    assert writes == []
    # The operator's default limit of requests in flight to one Quay server.
    assert quay.peak_concurrency() <= 8


def test_long_history_moving_while_read(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    old, new, target = (digest(f"{repository}/{label}") for label in ("old", "new", "target"))
    for manifest in (old, new, target):
        quay.add_manifest(repository, manifest)
    # The double's clock stays on wall time, as the operator's does, so many rows share a second.
    for index in range(250):
        if index == 100:
            manifest = target
        else:
            manifest = new if index % 2 else old
        quay.move_tag(repository, "busy", manifest)
    quay.move_tag(repository, "busy", new)  # the same digest as the row before: still two rows
    # The target is on the second page. That read waits 1.5 s, and the tag moves by hand meanwhile.
    quay.add_fault(method="GET", path=f"/repository/{repository}/tag/", delay=0.0, count=1)
    quay.add_fault(method="GET", path=f"/repository/{repository}/tag/", delay=1.5, count=1)

    cluster.apply_tag("busy", repository, "busy", target, refreshInterval="0")
    time.sleep(0.7)
    quay.move_tag(repository, "busy", old)

    body = cluster.wait_for("busy", ready_with("True", "InSync"))
    assert quay.alive_digest(repository, "busy") == target
    restores = [record for record in quay.requests() if record.method == "POST" and repository in record.path]
    assert len(restores) == 1
    history = body["status"]["history"]
    assert len(history) == 100
    assert history[0]["manifestDigest"] == target
    assert history[0]["reversion"] is True
    assert history[1]["manifestDigest"] == old
    starts = [row["startTime"] for row in history]
    assert starts == sorted(starts, reverse=True)
    digests = [row["manifestDigest"] for row in history]
    # Below the restore and the move by hand, the rows alternate as they were written.
    assert digests[2:4] == [new, new]
    for newer, older in zip(digests[3:], digests[4:]):
        assert newer != older, "a row is missing or repeated in the history"
    for newer, older in zip(history, history[1:]):
        assert older.get("endTime") == newer["startTime"]
