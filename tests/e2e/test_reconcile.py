"""The operator on the real control plane against the Quay double, driven with kubectl."""

from __future__ import annotations

import base64

import pytest

from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, ready, ready_with, repository_tag

pytestmark = pytest.mark.controlplane


def writes_to(quay: QuayDouble, repository: str) -> list[str]:
    return [
        f"{record.method} {record.path}"
        for record in quay.requests()
        if record.method != "GET" and f"/repository/{repository}/" in record.path
    ]


def test_new_digest_is_put_then_rolled_back(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    old, new = digest("old"), digest("new")
    quay.add_manifest(repository, old)
    quay.add_manifest(repository, new)
    quay.move_tag(repository, "web", old)
    quay.move_tag(repository, "candidate", new)  # keeps the new manifest alive, so PUT accepts it

    cluster.apply_tag("web", repository, "web", new)
    body = cluster.wait_for("web", ready_with("True", "InSync"))
    status = body["status"]
    assert quay.alive_digest(repository, "web") == new
    assert status["currentDigest"] == new
    assert status["lastSyncTime"]
    assert [row["manifestDigest"] for row in status["history"]] == [new, old]
    assert status["history"][0]["reversion"] is False
    assert "endTime" not in status["history"][0]
    assert status["history"][1]["endTime"] == status["history"][0]["startTime"]
    assert writes_to(quay, repository) == [f"PUT /api/v1/repository/{repository}/tag/web"]
    moved = cluster.wait_for_event("web", "TagMoved")
    assert old in moved["message"]
    assert new in moved["message"]

    cluster.apply_tag("web", repository, "web", old)
    body = cluster.wait_for("web", ready_with("True", "InSync", generation=2))
    history = body["status"]["history"]
    assert quay.alive_digest(repository, "web") == old
    assert [row["manifestDigest"] for row in history] == [old, new, old]
    assert history[0]["reversion"] is True
    assert writes_to(quay, repository)[-1] == f"POST /api/v1/repository/{repository}/tag/web/restore"
    cluster.wait_for_event("web", "TagRestored")


def test_tag_already_in_sync_is_not_written(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = digest("current")
    quay.add_manifest(repository, current)
    quay.move_tag(repository, "stable", current)

    cluster.apply_tag("stable", repository, "stable", current)
    body = cluster.wait_for("stable", ready_with("True", "InSync"))
    assert body["status"]["currentDigest"] == current
    assert len(body["status"]["history"]) == 1
    assert writes_to(quay, repository) == []


def test_new_tag_is_created(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    seeded = digest(repository + "/seed")
    quay.move_tag(repository, "latest", seeded)

    cluster.apply_tag("release", repository, "release-1.0", seeded)
    body = cluster.wait_for("release", ready_with("True", "InSync"))
    assert quay.alive_digest(repository, "release-1.0") == seeded
    assert [row["manifestDigest"] for row in body["status"]["history"]] == [seeded]


def test_digest_of_deleted_tag_is_restored(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    # A manifest that no alive tag references: Quay's PUT returns 404, restore accepts it.
    orphan = digest("orphan")
    quay.add_manifest(repository, orphan)

    cluster.apply_tag("orphan", repository, "orphan", orphan)
    body = cluster.wait_for("orphan", ready_with("True", "InSync"))
    assert quay.alive_digest(repository, "orphan") == orphan
    assert body["status"]["history"][0]["reversion"] is True
    assert writes_to(quay, repository) == [
        f"PUT /api/v1/repository/{repository}/tag/orphan",
        f"POST /api/v1/repository/{repository}/tag/orphan/restore",
    ]


def test_missing_manifest_waits_until_pushed(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    unpushed = digest("unpushed")
    cluster.apply_tag("early", repository, "early", unpushed)
    body = cluster.wait_for("early", ready_with("False", "ManifestNotFound"))
    condition = ready(body)
    assert condition is not None
    assert unpushed in condition["message"]
    assert "Push the image" in condition["message"]
    assert quay.alive_digest(repository, "early") is None
    cluster.wait_for_event("early", "ManifestNotFound")

    # The CI pipeline pushes the image, with a tag of its own.
    quay.add_manifest(repository, unpushed)
    quay.move_tag(repository, "build-42", unpushed)
    body = cluster.wait_for("early", ready_with("True", "InSync"), timeout=60)
    assert quay.alive_digest(repository, "early") == unpushed
    assert body["status"]["currentDigest"] == unpushed


def test_manifest_of_other_repository_is_not_found(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    other = f"{repository}-other"
    elsewhere = digest("elsewhere")
    quay.add_manifest(other, elsewhere)
    quay.move_tag(other, "latest", elsewhere)

    cluster.apply_tag("wrong-repo", repository, "latest", elsewhere)
    cluster.wait_for("wrong-repo", ready_with("False", "ManifestNotFound"))


def test_unknown_repository_is_reported(cluster: Cluster) -> None:
    cluster.apply_tag("missing-repo", "quayadmin/does-not-exist", "latest", digest("x"))
    body = cluster.wait_for("missing-repo", ready_with("False", "RepositoryNotFound"))
    condition = ready(body)
    assert condition is not None
    assert "quayadmin/does-not-exist" in condition["message"]


def test_token_from_secret_is_used(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    seeded = digest(repository + "/seed")
    quay.move_tag(repository, "latest", seeded)
    reference = {"tokenSecretRef": {"name": "quay-token", "key": "token"}}

    cluster.apply_tag("with-secret", repository, "pinned", seeded, connection=reference)
    body = cluster.wait_for("with-secret", ready_with("False", "SecretNotFound"))
    condition = ready(body)
    assert condition is not None
    assert '"quay-token"' in condition["message"]

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "quay-token", "labels": {"quaytag.dev/token": "true"}},
        "data": {"token": base64.b64encode(b"reader-token").decode()},
    }
    cluster.apply(secret)
    body = cluster.wait_for("with-secret", ready_with("False", "Forbidden"), timeout=30)
    condition = ready(body)
    assert condition is not None
    assert "reader-token" not in str(body)

    secret["data"] = {"token": base64.b64encode(b"not-a-token").decode()}
    cluster.apply(secret)
    cluster.apply_tag("bad-token", repository, "pinned", seeded, connection=reference)
    cluster.wait_for("bad-token", ready_with("False", "Unauthorized"))


def test_schema_rejects_invalid_spec(cluster: Cluster) -> None:
    bad = repository_tag("bad", "quayadmin/busybox", ".hidden", "sha256:" + "A" * 64)
    with pytest.raises(Exception) as raised:
        cluster.apply(bad)
    message = str(raised.value)
    assert "spec.tag" in message
    assert "spec.manifestDigest" in message


def test_printer_columns_show_readiness(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    seeded = digest(repository + "/seed")
    quay.move_tag(repository, "latest", seeded)
    cluster.apply_tag("columns", repository, "latest", seeded)
    cluster.wait_for("columns", ready_with("True", "InSync"))

    output = cluster.plane.kubectl("get", "rtag", "columns", "-n", cluster.namespace).stdout
    header, row = output.splitlines()[:2]
    assert header.split() == ["NAME", "REPOSITORY", "TAG", "READY", "REASON", "AGE"]
    assert row.split()[:5] == ["columns", repository, "latest", "True", "InSync"]

    wide = cluster.plane.kubectl("get", "rtag", "columns", "-n", cluster.namespace, "-o", "wide").stdout
    assert "DIGEST" in wide.splitlines()[0]
    assert seeded in wide
