"""Garbage collection: the time-machine window, unrestorable digests and kept manifests."""

from __future__ import annotations

from typing import Any

import httpx

from quay_tag_testing.quay_double import QuayDouble

from .seed_data import CHILD, CURRENT, DEAD_ONLY, LIST, REPOSITORY, SECOND, UNTAGGED, base_seed

TAG_URL = f"{REPOSITORY}/tag/"
DAY = 24 * 3600
TWO_WEEKS = 14 * DAY


def stored_digests(quay: QuayDouble, repository: str = REPOSITORY) -> set[str]:
    state: Any = quay.state()
    entry = next(entry for entry in state["repositories"] if entry["repository"] == repository)
    return {manifest["digest"] for manifest in entry["manifests"]}


def test_gc_keeps_rows_inside_window(quay: QuayDouble, api: httpx.Client) -> None:
    quay.advance_clock(TWO_WEEKS - 2 * 3600)

    report = quay.collect_garbage()

    assert report.removed_rows == 0
    assert DEAD_ONLY in stored_digests(quay)
    assert api.post(TAG_URL + "latest/restore", json={"manifest_digest": DEAD_ONLY}).status_code == 200


def test_gc_makes_digest_unrestorable(quay: QuayDouble, api: httpx.Client) -> None:
    # The dead row of latest ended one hour before the frozen time.
    quay.advance_clock(TWO_WEEKS)

    report = quay.collect_garbage()

    assert report.removed_rows == 1
    assert f"{REPOSITORY}@{DEAD_ONLY}" in report.removed_manifests
    rows = api.get(TAG_URL, params={"specificTag": "latest"}).json()["tags"]
    assert [row["manifest_digest"] for row in rows] == [CURRENT]
    restore = api.post(TAG_URL + "latest/restore", json={"manifest_digest": DEAD_ONLY})
    assert restore.status_code == 404
    put = api.put(TAG_URL + "latest", json={"manifest_digest": DEAD_ONLY})
    assert put.status_code == 404


def test_gc_removes_untagged_manifests(quay: QuayDouble) -> None:
    report = quay.collect_garbage()

    assert report.removed_manifests == (f"{REPOSITORY}@{UNTAGGED}",)
    assert UNTAGGED not in stored_digests(quay)


def test_gc_keeps_children_of_tagged_list(quay: QuayDouble) -> None:
    quay.collect_garbage()

    assert {LIST, CHILD} <= stored_digests(quay)


def test_gc_removes_list_and_children_together(quay: QuayDouble, api: httpx.Client) -> None:
    assert api.delete(TAG_URL + "multi").status_code == 204
    quay.advance_clock(TWO_WEEKS)

    quay.collect_garbage()

    assert LIST not in stored_digests(quay)
    assert CHILD not in stored_digests(quay)


def test_gc_keeps_manifest_of_alive_tag(quay: QuayDouble, api: httpx.Client) -> None:
    assert api.put(TAG_URL + "latest", json={"manifest_digest": SECOND}).status_code == 201
    quay.advance_clock(TWO_WEEKS + DAY)

    quay.collect_garbage()

    assert SECOND in stored_digests(quay)
    assert CURRENT not in stored_digests(quay)


def test_gc_uses_namespace_window() -> None:
    seed = base_seed()
    seed["namespaces"] = [{"name": "acme", "time_machine_seconds": 600}]

    with QuayDouble(seed) as quay:
        # latest's dead row ended an hour ago, beyond the 10-minute window.
        report = quay.collect_garbage()
        assert report.removed_rows == 1
        assert DEAD_ONLY not in stored_digests(quay)


def test_gc_keeps_future_expiration(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.put(TAG_URL + "stable", json={"expiration": 1716324069 + 30 * DAY})
    assert response.status_code == 201
    quay.advance_clock(TWO_WEEKS + DAY)

    quay.collect_garbage()

    assert SECOND in stored_digests(quay)
