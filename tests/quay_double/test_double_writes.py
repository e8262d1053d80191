"""PUT, restore and DELETE: which digests they accept, the history rows they write, and body errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from quay_tag_testing.quay_double import QuayDouble

from .seed_data import CHILD, CURRENT, DEAD_ONLY, FROZEN_TIME, LIST, REPOSITORY, SECOND, UNKNOWN, UNTAGGED

TAG_URL = f"{REPOSITORY}/tag/"
TAG_NAME_MESSAGE = (
    'Invalid tag: must match [A-Za-z0-9_.-], NOT start with "." or "-", and can contain 1-128 characters'
)
BAD_REQUEST_MESSAGE = "The browser (or proxy) sent a request that this server could not understand."


def history(api: httpx.Client, tag: str) -> list[dict[str, Any]]:
    response = api.get(TAG_URL, params={"specificTag": tag})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["tags"]
    return rows


def put_tag(api: httpx.Client, tag: str, body: object) -> httpx.Response:
    return api.put(TAG_URL + tag, json=body)


def restore_tag(api: httpx.Client, tag: str, body: object) -> httpx.Response:
    return api.post(TAG_URL + tag + "/restore", json=body)


def test_put_moves_tag_and_ends_alive_row(quay: QuayDouble, api: httpx.Client) -> None:
    quay.advance_clock(60)

    response = put_tag(api, "latest", {"manifest_digest": SECOND})

    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == "Updated"
    rows = history(api, "latest")
    assert [row["manifest_digest"] for row in rows] == [SECOND, CURRENT, DEAD_ONLY]
    assert "end_ts" not in rows[0]
    assert rows[0]["reversion"] is False
    assert rows[0]["start_ts"] == FROZEN_TIME + 60
    assert rows[1]["end_ts"] == FROZEN_TIME + 60
    assert rows[1]["expiration"] == rows[0]["last_modified"]


def test_put_same_digest_still_adds_row(quay: QuayDouble, api: httpx.Client) -> None:
    quay.advance_clock(5)

    response = put_tag(api, "latest", {"manifest_digest": CURRENT})

    assert response.status_code == 201
    rows = history(api, "latest")
    assert [row["manifest_digest"] for row in rows] == [CURRENT, CURRENT, DEAD_ONLY]
    assert rows[1]["end_ts"] == rows[0]["start_ts"]


def test_put_creates_new_tag(api: httpx.Client) -> None:
    response = put_tag(api, "release-1.0", {"manifest_digest": CURRENT})

    assert response.status_code == 201
    rows = history(api, "release-1.0")
    assert len(rows) == 1
    assert rows[0]["manifest_digest"] == CURRENT


def test_put_accepts_child_of_alive_list(api: httpx.Client) -> None:
    response = put_tag(api, "amd64", {"manifest_digest": CHILD})

    assert response.status_code == 201
    assert history(api, "amd64")[0]["manifest_digest"] == CHILD


@pytest.mark.parametrize(
    "digest",
    [DEAD_ONLY, UNTAGGED, UNKNOWN, "not-a-digest", "", None],
    ids=["dead-only", "untagged", "unknown", "malformed", "empty", "null"],
)
def test_put_rejects_digest_not_alive(api: httpx.Client, digest: str | None) -> None:
    response = put_tag(api, "latest", {"manifest_digest": digest})

    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"
    assert [row["manifest_digest"] for row in history(api, "latest")] == [CURRENT, DEAD_ONLY]


def test_put_rejects_child_of_dead_list(quay: QuayDouble, api: httpx.Client) -> None:
    assert api.delete(TAG_URL + "multi").status_code == 204

    response = put_tag(api, "amd64", {"manifest_digest": CHILD})

    assert response.status_code == 404


def test_restore_accepts_dead_only_digest(quay: QuayDouble, api: httpx.Client) -> None:
    quay.advance_clock(30)

    response = restore_tag(api, "latest", {"manifest_digest": DEAD_ONLY})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {}
    rows = history(api, "latest")
    assert rows[0]["manifest_digest"] == DEAD_ONLY
    assert rows[0]["reversion"] is True
    assert rows[0]["start_ts"] == FROZEN_TIME + 30
    assert rows[1]["manifest_digest"] == CURRENT
    assert rows[1]["end_ts"] == FROZEN_TIME + 30


@pytest.mark.parametrize("digest", [UNTAGGED, SECOND, LIST], ids=["untagged", "other-tag", "list"])
def test_restore_accepts_any_stored_manifest(api: httpx.Client, digest: str) -> None:
    response = restore_tag(api, "latest", {"manifest_digest": digest})

    assert response.status_code == 200
    assert quay_alive_digest(api, "latest") == digest


def test_restore_unknown_digest_is_404(api: httpx.Client) -> None:
    response = restore_tag(api, "latest", {"manifest_digest": UNKNOWN})

    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"


def test_restore_missing_digest_is_400(api: httpx.Client) -> None:
    response = restore_tag(api, "latest", {"other": "value"})

    assert response.status_code == 400
    body = response.json()
    assert body["error_type"] == "invalid_request"
    assert body["detail"] == "Missing manifest_digest"


def test_restore_null_digest_fails_schema(api: httpx.Client) -> None:
    response = restore_tag(api, "latest", {"manifest_digest": None})

    assert response.status_code == 400
    assert response.json()["detail"] == "None is not of type 'string'"


def test_restore_skips_tag_name_check(api: httpx.Client) -> None:
    """Quay's restore endpoint does not validate the tag name, unlike PUT."""
    response = restore_tag(api, "-odd", {"manifest_digest": CURRENT})

    assert response.status_code == 200


def test_delete_ends_alive_row(quay: QuayDouble, api: httpx.Client) -> None:
    quay.advance_clock(20)

    response = api.delete(TAG_URL + "stable")

    assert response.status_code == 204
    assert response.content == b""
    rows = history(api, "stable")
    assert len(rows) == 1
    assert rows[0]["end_ts"] == FROZEN_TIME + 20
    assert quay.alive_digest(REPOSITORY, "stable") is None


def test_delete_twice_is_404(api: httpx.Client) -> None:
    assert api.delete(TAG_URL + "stable").status_code == 204

    response = api.delete(TAG_URL + "stable")

    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"


def test_delete_unknown_tag_is_404(api: httpx.Client) -> None:
    response = api.delete(TAG_URL + "never-existed")

    assert response.status_code == 404


def test_delete_skip_recovery_period_hides_row(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.delete(TAG_URL + "stable", params={"skipRecoveryPeriod": "true"})

    assert response.status_code == 204
    assert history(api, "stable") == []
    report = quay.collect_garbage()
    assert report.removed_rows == 1
    assert restore_tag(api, "stable", {"manifest_digest": SECOND}).status_code == 404


def test_deleted_tag_can_be_put_again(api: httpx.Client) -> None:
    assert api.delete(TAG_URL + "latest").status_code == 204

    assert put_tag(api, "latest", {"manifest_digest": SECOND}).status_code == 201
    assert quay_alive_digest(api, "latest") == SECOND


@pytest.mark.parametrize("tag", ["-leading-dash", ".leading-dot", "x" * 129, "caf\u00e9", "a+b"])
def test_put_rejects_invalid_tag_name(api: httpx.Client, tag: str) -> None:
    response = put_tag(api, tag, {"manifest_digest": CURRENT})

    assert response.status_code == 400
    assert response.json() == {"message": TAG_NAME_MESSAGE}


@pytest.mark.parametrize("tag", ["_underscore", "v1.2.3-rc.1", "x" * 128, "UPPER"])
def test_put_accepts_valid_tag_names(api: httpx.Client, tag: str) -> None:
    response = put_tag(api, tag, {"manifest_digest": CURRENT})

    assert response.status_code == 201


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded"],
)
def test_put_without_json_content_type_is_415(api: httpx.Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.put(TAG_URL + "latest", content=b'{"manifest_digest": "x"}', headers=headers)

    assert response.status_code == 415
    assert response.json() == {
        "message": "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
    }


def test_restore_without_json_content_type_is_415(api: httpx.Client) -> None:
    response = api.post(TAG_URL + "latest/restore", content=b"{}", headers={"Content-Type": "text/plain"})

    assert response.status_code == 415


def test_put_accepts_json_content_type_with_charset(api: httpx.Client) -> None:
    response = api.put(
        TAG_URL + "latest",
        content=f'{{"manifest_digest": "{SECOND}"}}'.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 201


@pytest.mark.parametrize("raw_body", [b"", b"{not json", b"[1,"])
def test_put_undecodable_json_is_400(api: httpx.Client, raw_body: bytes) -> None:
    response = api.put(TAG_URL + "latest", content=raw_body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json() == {"message": BAD_REQUEST_MESSAGE}


def test_put_null_body_is_missing_json(api: httpx.Client) -> None:
    response = api.put(TAG_URL + "latest", content=b"null", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["detail"] == "Missing JSON body"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ([1, 2], "[1, 2] is not of type 'object'"),
        ("text", "'text' is not of type 'object'"),
        ({"manifest_digest": 12}, "12 is not of type 'string', 'null'"),
        ({"expiration": "tomorrow"}, "'tomorrow' is not of type 'number', 'null'"),
        ({"expiration": True}, "True is not of type 'number', 'null'"),
    ],
)
def test_put_body_fails_schema(api: httpx.Client, body: object, detail: str) -> None:
    response = put_tag(api, "latest", body)

    assert response.status_code == 400
    assert response.json()["error_type"] == "invalid_request"
    assert response.json()["detail"] == detail


def test_put_ignores_extra_keys(api: httpx.Client) -> None:
    response = put_tag(api, "latest", {"manifest_digest": SECOND, "immutable": True, "comment": "x"})

    assert response.status_code == 201
    assert quay_alive_digest(api, "latest") == SECOND


def test_put_empty_object_changes_nothing(api: httpx.Client) -> None:
    response = put_tag(api, "latest", {})

    assert response.status_code == 201
    assert len(history(api, "latest")) == 2


def test_put_unknown_repository_is_404(api: httpx.Client) -> None:
    response = api.put("acme/missing/tag/latest", json={"manifest_digest": CURRENT})

    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"


def test_put_checks_tag_name_before_repository(api: httpx.Client) -> None:
    response = api.put("acme/missing/tag/-bad", json={"manifest_digest": CURRENT})

    assert response.status_code == 400
    assert response.json() == {"message": TAG_NAME_MESSAGE}


def test_restore_unknown_repository_is_404(api: httpx.Client) -> None:
    response = api.post("acme/missing/tag/latest/restore", json={})

    assert response.status_code == 404


def test_delete_unknown_repository_is_404(api: httpx.Client) -> None:
    response = api.delete("acme/missing/tag/latest")

    assert response.status_code == 404


def quay_alive_digest(api: httpx.Client, tag: str) -> str | None:
    response = api.get(TAG_URL, params={"specificTag": tag, "onlyActiveTags": "true"})
    rows = response.json()["tags"]
    assert len(rows) <= 1
    return rows[0]["manifest_digest"] if rows else None
