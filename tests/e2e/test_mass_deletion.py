"""Many resources with deletionPolicy Delete deleted at once while their periodic checks run."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest
import yaml

from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, repository_tag, tag_rows

pytestmark = pytest.mark.controlplane

# Every resource is re-read each second, so deletions meet passes in progress.
OPERATOR_SETTINGS = {"REFRESH_INTERVAL": "1s"}
RESOURCES = 50
# Tags moved by hand before the deletion: the operator must leave them, with a TagLeftInQuay Event.
MOVED = range(0, RESOURCES, 10)
# Seconds from the delete command until no resource is left. Measured at about 1 s on 2 shared cores.
DELETION_BOUND_SECONDS = 45


def remaining(cluster: Cluster) -> list[dict[str, Any]]:
    output = cluster.plane.kubectl("get", "repositorytags", "-n", cluster.namespace, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(output)["items"]
    return items


def in_sync_count(cluster: Cluster) -> int:
    count = 0
    for item in remaining(cluster):
        for condition in item.get("status", {}).get("conditions", []):
            if condition["type"] == "Ready" and condition["reason"] == "InSync":
                count += 1
    return count


def test_mass_deletion_during_checks(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    ours, theirs, bystander = (digest(f"{repository}/{label}") for label in ("ours", "theirs", "bystander"))
    for manifest in (ours, theirs, bystander):
        quay.add_manifest(repository, manifest)
    quay.move_tag(repository, "build", ours)
    quay.move_tag(repository, "bystander", bystander)

    manifests = [
        repository_tag(f"gone-{index}", repository, f"t{index}", ours, deletionPolicy="Delete")
        for index in range(RESOURCES)
    ]
    cluster.plane.kubectl("apply", "-n", cluster.namespace, "-f", "-", input=yaml.safe_dump_all(manifests))
    deadline = time.monotonic() + 90
    while in_sync_count(cluster) < RESOURCES:
        assert time.monotonic() < deadline, f"only {in_sync_count(cluster)} of {RESOURCES} resources are InSync"
        time.sleep(1)
    for index in MOVED:
        quay.move_tag(repository, f"t{index}", theirs)
    # Drift correction may move some back before the deletion reaches them.
    bystander_rows = [row for row in tag_rows(quay, repository) if row["name"] in ("bystander", "build")]
    quay.reset_requests()

    started = time.monotonic()
    cluster.plane.kubectl("delete", "repositorytags", "--all", "-n", cluster.namespace, "--wait=false")
    while remaining(cluster):
        left = [item["metadata"]["name"] for item in remaining(cluster)]
        assert time.monotonic() - started < DELETION_BOUND_SECONDS, f"still present: {left}"
        time.sleep(0.5)
    deletion_seconds = time.monotonic() - started

    deletes = [record.path for record in quay.requests() if record.method == "DELETE"]
    other_writes = [f"{record.method} {record.path}" for record in quay.requests() if record.method not in ("GET", "DELETE")]
    left_in_quay = {index: quay.alive_digest(repository, f"t{index}") for index in range(RESOURCES)}
    for index in range(RESOURCES):
        tag_path = f"/api/v1/repository/{repository}/tag/t{index}"
        if left_in_quay[index] is None:
            assert deletes.count(tag_path) == 1, f"t{index} deleted {deletes.count(tag_path)} times"
        else:
            # Only a tag that someone else moved may stay, and it stays at their digest.
            assert index in MOVED, f"t{index} was left in Quay at {left_in_quay[index]}"
            assert left_in_quay[index] == theirs
            assert tag_path not in deletes
            events = cluster.events(f"gone-{index}")
            assert any(event["reason"] == "TagLeftInQuay" for event in events), [event["reason"] for event in events]
    # Drift correction may move a hand-moved tag back before the deletion, and then deletes it; no other write.
    # A path is .../tag/NAME for a PUT and .../tag/NAME/restore for a restore.
    written_tags = {path.split("/tag/", 1)[1].split("/")[0] for path in other_writes}
    assert written_tags <= {f"t{index}" for index in MOVED}, other_writes
    assert [row for row in tag_rows(quay, repository) if row["name"] in ("bystander", "build")] == bystander_rows
    # KopfRunner swaps sys.stdout while the operator runs, so the summary goes to the real one.
    print(f"\n{RESOURCES} resources deleted in {deletion_seconds:.1f} s; "
          f"{sum(1 for value in left_in_quay.values() if value is None)} tags deleted in Quay", file=sys.__stdout__)

