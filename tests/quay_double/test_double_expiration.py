"""PUT with ``expiration``: future only, null clears, clamping, alive tags only, never carried over."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from quay_tag_testing.quay_double import QuayDouble

from .seed_data import CURRENT, DEAD_ONLY, FROZEN_TIME, REPOSITORY, SECOND

TAG_URL = f"{REPOSITORY}/tag/"
HOUR = 3600
WEEK = 7 * 24 * HOUR
# latest's alive row started one hour before FROZEN_TIME.
LATEST_START = FROZEN_TIME - HOUR
BAD_REQUEST = {"message": "The browser (or proxy) sent a request that this server could not understand."}


def alive_row(api: httpx.Client, tag: str) -> dict[str, Any]:
    response = api.get(TAG_URL, params={"specificTag": tag, "onlyActiveTags": "true"})
    rows: list[dict[str, Any]] = response.json()["tags"]
    assert len(rows) == 1, rows
    return rows[0]


def set_expiration(api: httpx.Client, tag: str, expiration: object) -> httpx.Response:
    return api.put(TAG_URL + tag, json={"expiration": expiration})


def test_expiration_sets_end_on_alive_row(api: httpx.Client) -> None:
    response = set_expiration(api, "latest", FROZEN_TIME + 2 * HOUR)

    assert response.status_code == 201
    row = alive_row(api, "latest")
    assert row["end_ts"] == FROZEN_TIME + 2 * HOUR
    assert row["expiration"] == "Tue, 21 May 2024 22:41:09 -0000"
    assert row["manifest_digest"] == CURRENT


def test_expiration_writes_no_new_row(api: httpx.Client) -> None:
    set_expiration(api, "latest", FROZEN_TIME + 2 * HOUR)

    rows = api.get(TAG_URL, params={"specificTag": "latest"}).json()["tags"]

    assert [row["manifest_digest"] for row in rows] == [CURRENT, DEAD_ONLY]


def test_expiration_fraction_is_truncated(api: httpx.Client) -> None:
    set_expiration(api, "latest", FROZEN_TIME + 2 * HOUR + 0.9)

    assert alive_row(api, "latest")["end_ts"] == FROZEN_TIME + 2 * HOUR


@pytest.mark.parametrize("expiration", [FROZEN_TIME, FROZEN_TIME - 1, 0, -5])
def test_expiration_not_in_future_is_400(api: httpx.Client, expiration: int) -> None:
    response = set_expiration(api, "latest", expiration)

    assert response.status_code == 400
    assert response.json() == BAD_REQUEST
    assert "end_ts" not in alive_row(api, "latest")


def test_expiration_out_of_range_is_400(api: httpx.Client) -> None:
    response = set_expiration(api, "latest", 10**20)

    assert response.status_code == 400
    assert response.json() == BAD_REQUEST


def test_expiration_null_clears(api: httpx.Client) -> None:
    set_expiration(api, "latest", FROZEN_TIME + 2 * HOUR)

    response = set_expiration(api, "latest", None)

    assert response.status_code == 201
    row = alive_row(api, "latest")
    assert "end_ts" not in row
    assert "expiration" not in row


def test_expiration_clamped_to_one_hour_after_start(quay: QuayDouble, api: httpx.Client) -> None:
    """A tag moved now and given an expiration a minute away lives for one hour from its start."""
    assert api.put(TAG_URL + "fresh", json={"manifest_digest": CURRENT}).status_code == 201

    response = set_expiration(api, "fresh", FROZEN_TIME + 60)

    assert response.status_code == 201
    assert alive_row(api, "fresh")["end_ts"] == FROZEN_TIME + HOUR


def test_expiration_clamped_to_104_weeks_after_start(api: httpx.Client) -> None:
    response = set_expiration(api, "latest", FROZEN_TIME + 200 * WEEK)

    assert response.status_code == 201
    assert alive_row(api, "latest")["end_ts"] == LATEST_START + 104 * WEEK


def test_expiration_within_bounds_is_kept(api: httpx.Client) -> None:
    set_expiration(api, "latest", FROZEN_TIME + 10 * WEEK)

    assert alive_row(api, "latest")["end_ts"] == FROZEN_TIME + 10 * WEEK


def test_expiration_on_unknown_tag_is_404(api: httpx.Client) -> None:
    response = set_expiration(api, "never-existed", FROZEN_TIME + 2 * HOUR)

    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"


def test_expiration_on_deleted_tag_is_404(api: httpx.Client) -> None:
    assert api.delete(TAG_URL + "stable").status_code == 204

    response = set_expiration(api, "stable", FROZEN_TIME + 2 * HOUR)

    assert response.status_code == 404


def test_expiration_with_unknown_tag_blocks_move(api: httpx.Client) -> None:
    """Quay handles the expiration first, so a new tag with an expiration is a 404."""
    response = api.put(TAG_URL + "brand-new", json={"manifest_digest": CURRENT, "expiration": FROZEN_TIME + 7200})

    assert response.status_code == 404
    assert api.get(TAG_URL, params={"specificTag": "brand-new"}).json()["tags"] == []


def test_move_does_not_carry_expiration(quay: QuayDouble, api: httpx.Client) -> None:
    set_expiration(api, "latest", FROZEN_TIME + 2 * HOUR)
    quay.advance_clock(10)

    response = api.put(TAG_URL + "latest", json={"manifest_digest": SECOND})

    assert response.status_code == 201
    row = alive_row(api, "latest")
    assert row["manifest_digest"] == SECOND
    assert "end_ts" not in row
    assert "expiration" not in row


def test_expiration_and_move_in_one_put(api: httpx.Client) -> None:
    response = api.put(TAG_URL + "latest", json={"manifest_digest": SECOND, "expiration": FROZEN_TIME + 2 * HOUR})

    assert response.status_code == 201
    rows = api.get(TAG_URL, params={"specificTag": "latest"}).json()["tags"]
    assert rows[0]["manifest_digest"] == SECOND
    assert "end_ts" not in rows[0]
    # The expiration landed on the old row, which the move then ended at once.
    assert rows[1]["end_ts"] == FROZEN_TIME


def test_expired_tag_is_no_longer_alive(quay: QuayDouble, api: httpx.Client) -> None:
    set_expiration(api, "latest", FROZEN_TIME + 2 * HOUR)

    quay.advance_clock(2 * HOUR)

    active = api.get(TAG_URL, params={"specificTag": "latest", "onlyActiveTags": "true"}).json()["tags"]
    assert active == []
    assert quay.alive_digest(REPOSITORY, "latest") is None
    assert set_expiration(api, "latest", FROZEN_TIME + 5 * HOUR).status_code == 404
    assert api.delete(TAG_URL + "latest").status_code == 404


def test_expired_tag_manifest_needs_restore(quay: QuayDouble, api: httpx.Client) -> None:
    set_expiration(api, "stable", FROZEN_TIME + 2 * HOUR)
    quay.advance_clock(2 * HOUR)

    assert api.put(TAG_URL + "other", json={"manifest_digest": SECOND}).status_code == 404
    assert api.post(TAG_URL + "stable/restore", json={"manifest_digest": SECOND}).status_code == 200
