"""Admin API routes and the Python helpers that share their state methods."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from quay_tag_testing.quay_double import InvalidInputError, NotFoundError, QuayDouble

from .seed_data import CHILD, CURRENT, FROZEN_TIME, REPOSITORY, SECOND, make_digest

TAG_URL = f"{REPOSITORY}/tag/"
NEW_DIGEST = make_digest("pushed-later")


def repository_state(admin: httpx.Client, repository: str) -> dict[str, Any]:
    repositories = admin.get("state").json()["repositories"]
    entry: dict[str, Any] = next(entry for entry in repositories if entry["repository"] == repository)
    return entry


def test_state_lists_repositories_and_rows(admin: httpx.Client) -> None:
    body = admin.get("state").json()

    assert body["now_ms"] == FROZEN_TIME * 1000
    assert [entry["repository"] for entry in body["repositories"]] == ["acme/app", "acme/tools", "globex/app"]
    app = repository_state(admin, REPOSITORY)
    assert app["state"] == "NORMAL"
    latest = [row for row in app["tags"] if row["name"] == "latest"]
    assert [row["alive"] for row in latest] == [False, True]
    assert latest[1]["start_ms"] == (FROZEN_TIME - 3600) * 1000
    assert latest[1]["end_ms"] is None
    assert "admin-token" not in str(body)


def test_add_manifest_creates_repository(admin: httpx.Client) -> None:
    response = admin.post("manifests", json={"repository": "acme/new", "digest": NEW_DIGEST, "size": 42})

    assert response.status_code == 201
    assert response.json() == {
        "manifest": {"digest": NEW_DIGEST, "size": 42, "is_manifest_list": False, "children": []}
    }
    assert repository_state(admin, "acme/new")["manifests"][0]["digest"] == NEW_DIGEST


def test_add_manifest_list_needs_stored_children(admin: httpx.Client) -> None:
    missing = admin.post(
        "manifests",
        json={"repository": REPOSITORY, "digest": NEW_DIGEST, "is_manifest_list": True, "children": [NEW_DIGEST]},
    )
    stored = admin.post(
        "manifests",
        json={"repository": REPOSITORY, "digest": NEW_DIGEST, "is_manifest_list": True, "children": [CHILD]},
    )

    assert missing.status_code == 400
    assert "Add the child manifests first" in missing.json()["error"]
    assert stored.status_code == 201
    assert stored.json()["manifest"]["size"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"repository": REPOSITORY, "digest": "not-a-digest"},
        {"repository": "no-slash", "digest": NEW_DIGEST},
        {"repository": REPOSITORY, "digest": NEW_DIGEST, "size": -1},
        {"repository": REPOSITORY, "digest": CURRENT, "size": 1},
        {"repository": REPOSITORY},
        {"repository": REPOSITORY, "digest": NEW_DIGEST, "unknown": 1},
    ],
    ids=["bad-digest", "bad-repository", "negative-size", "conflicting-content", "missing-digest", "unknown-key"],
)
def test_add_manifest_rejects_bad_input(admin: httpx.Client, body: dict[str, Any]) -> None:
    response = admin.post("manifests", json=body)

    assert response.status_code == 400
    assert response.json()["error"]


def test_move_tag_by_hand_then_put(admin: httpx.Client, api: httpx.Client) -> None:
    """A pushed image becomes alive once a tag points at it, so PUT accepts it for another tag."""
    admin.post("manifests", json={"repository": REPOSITORY, "digest": NEW_DIGEST, "size": 10})
    assert api.put(TAG_URL + "stable", json={"manifest_digest": NEW_DIGEST}).status_code == 404

    moved = admin.post("tags", json={"repository": REPOSITORY, "tag": "latest", "digest": NEW_DIGEST})
    put = api.put(TAG_URL + "stable", json={"manifest_digest": NEW_DIGEST})

    assert moved.status_code == 201
    assert moved.json()["row"]["manifest_digest"] == NEW_DIGEST
    assert moved.json()["row"]["size"] == 10
    assert put.status_code == 201


def test_move_tag_by_hand_writes_history(quay: QuayDouble, api: httpx.Client) -> None:
    quay.advance_clock(15)

    row = quay.move_tag(REPOSITORY, "latest", CURRENT)

    rows = api.get(TAG_URL, params={"specificTag": "latest"}).json()["tags"]
    assert row.start_ms == (FROZEN_TIME + 15) * 1000
    assert len(rows) == 3
    assert rows[1]["end_ts"] == FROZEN_TIME + 15


def test_move_tag_by_hand_bypasses_immutability(quay: QuayDouble) -> None:
    quay.set_immutable(REPOSITORY, "latest")

    quay.move_tag(REPOSITORY, "latest", SECOND)

    assert quay.alive_digest(REPOSITORY, "latest") == SECOND


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"repository": REPOSITORY, "tag": "latest", "digest": NEW_DIGEST}, 404),
        ({"repository": "acme/missing", "tag": "latest", "digest": CURRENT}, 404),
        ({"repository": REPOSITORY, "tag": "-bad", "digest": CURRENT}, 400),
    ],
    ids=["unstored-digest", "unknown-repository", "bad-tag"],
)
def test_move_tag_by_hand_rejects(admin: httpx.Client, body: dict[str, str], status: int) -> None:
    response = admin.post("tags", json=body)

    assert response.status_code == status
    assert response.json()["error"]


def test_set_immutable_through_admin(admin: httpx.Client, api: httpx.Client) -> None:
    response = admin.post("tags/immutable", json={"repository": REPOSITORY, "tag": "latest", "immutable": True})

    alive_latest = [
        row for row in repository_state(admin, REPOSITORY)["tags"] if row["alive"] and row["name"] == "latest"
    ]
    assert response.status_code == 200
    assert alive_latest[0]["immutable"] is True
    assert api.delete(TAG_URL + "latest").status_code == 409


def test_set_immutable_needs_alive_tag(admin: httpx.Client) -> None:
    response = admin.post("tags/immutable", json={"repository": REPOSITORY, "tag": "nope"})

    assert response.status_code == 404


def test_set_repository_state_through_admin(admin: httpx.Client, api: httpx.Client) -> None:
    response = admin.post(f"repositories/{REPOSITORY}/state", json={"state": "READ_ONLY"})

    assert response.status_code == 200
    assert repository_state(admin, REPOSITORY)["state"] == "READ_ONLY"
    assert api.delete(TAG_URL + "latest").status_code == 503


def test_set_repository_state_rejects(admin: httpx.Client) -> None:
    unknown_state = admin.post(f"repositories/{REPOSITORY}/state", json={"state": "FROZEN"})
    unknown_repository = admin.post("repositories/acme/missing/state", json={"state": "NORMAL"})

    assert unknown_state.status_code == 400
    assert unknown_repository.status_code == 404


def test_clock_through_admin(admin: httpx.Client) -> None:
    response = admin.post("clock", json={"seconds": 90})
    negative = admin.post("clock", json={"seconds": -1})

    assert response.json() == {"now_ms": (FROZEN_TIME + 90) * 1000}
    assert negative.status_code == 400


def test_gc_through_admin(admin: httpx.Client) -> None:
    admin.post("clock", json={"seconds": 15 * 24 * 3600})

    response = admin.post("gc")

    assert response.status_code == 200
    body = response.json()
    assert body["removed_rows"] == 1
    assert len(body["removed_manifests"]) == 2


def test_admin_rejects_invalid_json(admin: httpx.Client) -> None:
    response = admin.post("clock", content=b"{oops", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_helpers_raise_for_bad_input(quay: QuayDouble) -> None:
    with pytest.raises(NotFoundError):
        quay.move_tag("acme/missing", "latest", CURRENT)
    with pytest.raises(NotFoundError):
        quay.set_immutable(REPOSITORY, "nope")
    with pytest.raises(InvalidInputError):
        quay.set_repository_state(REPOSITORY, "FROZEN")
    with pytest.raises(InvalidInputError):
        quay.add_manifest(REPOSITORY, "sha256:")
    with pytest.raises(ValueError):
        quay.advance_clock(-5)


def test_helpers_add_and_tag_manifest(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_manifest(REPOSITORY, NEW_DIGEST, size=7)
    quay.move_tag(REPOSITORY, "fresh", NEW_DIGEST)

    rows = api.get(TAG_URL, params={"specificTag": "fresh"}).json()["tags"]

    assert rows[0]["manifest_digest"] == NEW_DIGEST
    assert rows[0]["size"] == 7


def test_url_needs_running_double() -> None:
    double = QuayDouble()

    with pytest.raises(RuntimeError, match="not running"):
        double.url
