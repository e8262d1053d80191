"""Two operator instances that split the resources by label selector, as separate processes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quay_tag_testing.controlplane.process import ManagedProcess
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import TOKEN
from .kube import Cluster, digest, ready_with, repository_tag

pytestmark = pytest.mark.controlplane

SHARDS = ("east", "west")


@pytest.fixture
def shard_operators(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, tmp_path: Path
) -> Iterator[dict[str, ManagedProcess]]:
    """Start one operator process per shard; they reach the control plane through KUBECONFIG."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    operators = {}
    for shard in SHARDS:
        command = [
            sys.executable, "-m", "quay_tag_operator", "--quay-url", quay.url, "--token-file", str(token_file),
            "--label-selector", f"quaytag.dev/shard={shard}", "--refresh-interval", "2s", "--verbose",
        ]
        operator = ManagedProcess(f"operator-{shard}", command, tmp_path / f"operator-{shard}.log")
        operator.start()
        operators[shard] = operator
    try:
        yield operators
    finally:
        for operator in operators.values():
            operator.stop(10)


def labeled_tag(name: str, repository: str, image: str, shard: str | None) -> dict[str, object]:
    manifest = repository_tag(name, repository, name, image)
    if shard is not None:
        manifest["metadata"] = {"name": name, "labels": {"quaytag.dev/shard": shard}}
    return manifest


def test_each_resource_has_one_operator(
    control_plane: ControlPlane, namespace: str, quay: QuayDouble, repository: str,
    shard_operators: dict[str, ManagedProcess],
) -> None:
    cluster = Cluster(control_plane, namespace)
    image = digest(repository + "/sharded")
    quay.add_manifest(repository, image)
    quay.move_tag(repository, "base", image)
    quay.reset_requests()

    names = {shard: [f"{shard}-{index}" for index in range(3)] for shard in SHARDS}
    for shard, shard_names in names.items():
        for name in shard_names:
            cluster.apply(labeled_tag(name, repository, image, shard))
    cluster.apply(labeled_tag("unclaimed", repository, image, None))

    for shard_names in names.values():
        for name in shard_names:
            cluster.wait_for(name, ready_with("True", "InSync"))
    time.sleep(3)

    puts = [record.path.rsplit("/", 1)[-1] for record in quay.requests() if record.method == "PUT"]
    assert sorted(puts) == sorted(name for shard_names in names.values() for name in shard_names)
    assert "status" not in cluster.get("unclaimed")
    for shard, operator in shard_operators.items():
        assert operator.is_running(), operator.log_tail()
        # Both instances index every resource, to find conflicts; only the lines of the reconciling one count.
        log = "\n".join(line for line in operator.log_path.read_text().splitlines() if "Indexer" not in line)
        other = next(name for name in SHARDS if name != shard)
        assert f"{namespace}/{names[shard][0]}" in log
        assert f"{namespace}/{names[other][0]}" not in log
        assert f"{namespace}/unclaimed" not in log


def test_conflict_across_shards_is_found(
    control_plane: ControlPlane, namespace: str, quay: QuayDouble, repository: str,
    shard_operators: dict[str, ManagedProcess],
) -> None:
    cluster = Cluster(control_plane, namespace)
    first, second = digest(repository + "/first"), digest(repository + "/second")
    for image in (first, second):
        quay.add_manifest(repository, image)
        quay.move_tag(repository, f"keep-{image[-6:]}", image)

    east = repository_tag("claim-east", repository, "shared", first)
    east["metadata"] = {"name": "claim-east", "labels": {"quaytag.dev/shard": "east"}}
    cluster.apply(east)
    cluster.wait_for("claim-east", ready_with("True", "InSync"))
    west = repository_tag("claim-west", repository, "shared", second)
    west["metadata"] = {"name": "claim-west", "labels": {"quaytag.dev/shard": "west"}}
    cluster.apply(west)

    body = cluster.wait_for("claim-west", ready_with("False", "Conflict"))
    assert "claim-east" in body["status"]["conditions"][0]["message"]
    assert quay.alive_digest(repository, "shared") == first
