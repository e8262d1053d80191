"""Tag list endpoint: row format, order, paging, filters and query argument errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from quay_tag_testing.quay_double import QuayDouble

from .seed_data import CHILD, CURRENT, DEAD_ONLY, FROZEN_TIME, LIST, REPOSITORY, SECOND

FIXTURE = Path(__file__).parent.parent / "fixtures" / "quay-docs-tag-list.json"
TAGS = f"{REPOSITORY}/tag/"
DOCS_DIGEST = "sha256:57583a1b9c0a7509d3417387b4f43acf80d08cdcf5266ac87987be3f8f919d5d"


def list_tags(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get(TAGS, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_list_returns_quay_row_format(api: httpx.Client) -> None:
    response = api.get(TAGS)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["page"] == 1
    assert body["has_additional"] is False
    assert body["tags"] == [
        {
            "name": "multi",
            "reversion": False,
            "start_ts": FROZEN_TIME - 900,
            "manifest_digest": LIST,
            "is_manifest_list": True,
            "size": None,
            "last_modified": "Tue, 21 May 2024 20:26:09 -0000",
        },
        {
            "name": "stable",
            "reversion": False,
            "start_ts": FROZEN_TIME - 1800,
            "manifest_digest": SECOND,
            "is_manifest_list": False,
            "size": 2000,
            "last_modified": "Tue, 21 May 2024 20:11:09 -0000",
        },
        {
            "name": "latest",
            "reversion": False,
            "start_ts": FROZEN_TIME - 3600,
            "manifest_digest": CURRENT,
            "is_manifest_list": False,
            "size": 1000,
            "last_modified": "Tue, 21 May 2024 19:41:09 -0000",
        },
        {
            "name": "latest",
            "reversion": False,
            "start_ts": FROZEN_TIME - 7200,
            "end_ts": FROZEN_TIME - 3600,
            "manifest_digest": DEAD_ONLY,
            "is_manifest_list": False,
            "size": 3000,
            "last_modified": "Tue, 21 May 2024 18:41:09 -0000",
            "expiration": "Tue, 21 May 2024 19:41:09 -0000",
        },
    ]


def test_list_matches_quay_docs_sample() -> None:
    """Seeded with the history of the API guide's sample, the double returns that sample exactly."""
    expected = json.loads(FIXTURE.read_text())
    seed = {
        "frozen_time": 1716324069 + 60,
        "users": [{"name": "quayadmin"}],
        "tokens": [{"token": "docs-token", "user": "quayadmin", "scopes": ["repo:read"]}],
        "repositories": [
            {
                "name": "quayadmin/busybox",
                "manifests": [{"digest": DOCS_DIGEST, "size": 2275314}],
                "tags": [
                    {
                        "name": "test",
                        "history": [
                            {"digest": DOCS_DIGEST, "start_ts": 1715631517},
                            {"digest": DOCS_DIGEST, "start_ts": 1715695488},
                            {"digest": DOCS_DIGEST, "start_ts": 1716324069},
                        ],
                    },
                    {
                        "name": "example",
                        "history": [
                            {"digest": DOCS_DIGEST, "start_ts": 1715697708},
                            {"digest": DOCS_DIGEST, "start_ts": 1715698131},
                        ],
                    },
                ],
            }
        ],
    }

    with QuayDouble(seed) as quay:
        response = httpx.get(
            quay.url + "/api/v1/repository/quayadmin/busybox/tag/",
            headers={"Authorization": "Bearer docs-token"},
        )

    assert response.status_code == 200
    assert response.json() == expected


def test_rows_have_docs_sample_keys(api: httpx.Client) -> None:
    """Alive and dead rows carry the keys of the docs sample's rows, in the same order."""
    sample_rows = json.loads(FIXTURE.read_text())["tags"]
    sample_alive = [list(row) for row in sample_rows if "end_ts" not in row]
    sample_dead = [list(row) for row in sample_rows if "end_ts" in row]

    rows = list_tags(api)["tags"]
    alive = [list(row) for row in rows if "end_ts" not in row]
    dead = [list(row) for row in rows if "end_ts" in row]

    assert alive
    assert dead
    for keys in alive:
        assert keys == sample_alive[0]
    for keys in dead:
        assert keys == sample_dead[0]


def test_list_orders_equal_starts_by_name(quay: QuayDouble, api: httpx.Client) -> None:
    for tag in ("zeta", "alpha", "mid"):
        quay.move_tag(REPOSITORY, tag, CURRENT)

    names = [row["name"] for row in list_tags(api)["tags"]][:3]

    assert names == ["alpha", "mid", "zeta"]


def test_list_pages_with_has_additional(api: httpx.Client) -> None:
    first = list_tags(api, limit=3)
    second = list_tags(api, limit=3, page=2)
    past_end = list_tags(api, limit=3, page=3)

    assert [row["name"] for row in first["tags"]] == ["multi", "stable", "latest"]
    assert first["has_additional"] is True
    assert [row["manifest_digest"] for row in second["tags"]] == [DEAD_ONLY]
    assert second["page"] == 2
    assert second["has_additional"] is False
    assert past_end["tags"] == []
    assert past_end["has_additional"] is False


def test_list_page_boundary_has_no_additional(api: httpx.Client) -> None:
    body = list_tags(api, limit=4)

    assert len(body["tags"]) == 4
    assert body["has_additional"] is False


def test_tag_moved_between_pages_duplicates_row(quay: QuayDouble, api: httpx.Client) -> None:
    first = list_tags(api, limit=2)
    quay.advance_clock(10)
    response = api.put(f"{REPOSITORY}/tag/stable", json={"manifest_digest": CURRENT})
    assert response.status_code == 201
    second = list_tags(api, limit=2, page=2)

    first_rows = first["tags"]
    second_rows = second["tags"]
    # The new row pushed every older row one place down, so the last row of page 1
    # reappears at the top of page 2 instead of one row being skipped.
    assert second_rows[0]["name"] == first_rows[-1]["name"]
    assert second_rows[0]["start_ts"] == first_rows[-1]["start_ts"]
    assert second_rows[0]["manifest_digest"] == first_rows[-1]["manifest_digest"]
    assert "end_ts" in second_rows[0]


@pytest.mark.parametrize(
    ("limit", "expected_length"),
    [("0", 1), ("-5", 1), ("1", 1), ("100", 100), ("1000", 100)],
)
def test_list_clamps_limit(quay: QuayDouble, api: httpx.Client, limit: str, expected_length: int) -> None:
    for index in range(110):
        quay.move_tag(REPOSITORY, f"bulk-{index:03d}", CURRENT)

    body = list_tags(api, limit=limit)

    assert len(body["tags"]) == expected_length
    assert body["has_additional"] is True


def test_list_default_limit_is_fifty(quay: QuayDouble, api: httpx.Client) -> None:
    for index in range(60):
        quay.move_tag(REPOSITORY, f"bulk-{index:03d}", CURRENT)

    body = list_tags(api)

    assert len(body["tags"]) == 50
    assert body["has_additional"] is True


def test_list_page_below_one_is_page_one(api: httpx.Client) -> None:
    body = list_tags(api, page=0, limit=1)

    assert body["page"] == 1
    assert body["tags"][0]["name"] == "multi"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "ten"}, {"limit": "Limit to the number of results to return per page. Max 100."}),
        ({"limit": "1.5"}, {"limit": "Limit to the number of results to return per page. Max 100."}),
        ({"limit": ""}, {"limit": "Limit to the number of results to return per page. Max 100."}),
        ({"page": "two"}, {"page": "Page index for the results. Default 1."}),
        ({"page": "x", "limit": "y"}, {"page": "Page index for the results. Default 1."}),
    ],
)
def test_list_rejects_non_integer_arguments(api: httpx.Client, params: dict[str, str], message: object) -> None:
    response = api.get(TAGS, params=params)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"message": message}


def test_list_specific_tag(api: httpx.Client) -> None:
    rows = list_tags(api, specificTag="latest")["tags"]

    assert [row["manifest_digest"] for row in rows] == [CURRENT, DEAD_ONLY]


def test_list_specific_tag_unknown_is_empty(api: httpx.Client) -> None:
    body = list_tags(api, specificTag="nope")

    assert body["tags"] == []
    assert body["has_additional"] is False


def test_list_only_active_tags(api: httpx.Client) -> None:
    rows = list_tags(api, onlyActiveTags="true")["tags"]

    assert [row["name"] for row in rows] == ["multi", "stable", "latest"]
    assert all("end_ts" not in row for row in rows)


@pytest.mark.parametrize("value", ["false", "False", "0", "FALSE", "", "null"])
def test_list_only_active_tags_false_values(api: httpx.Client, value: str) -> None:
    rows = list_tags(api, onlyActiveTags=value)["tags"]

    assert len(rows) == 4


@pytest.mark.parametrize(
    ("filter_value", "expected_names"),
    [
        ("eq:latest", ["latest", "latest"]),
        ("eq:LATEST", []),
        ("like:TAB", ["stable"]),
        ("like:t", ["multi", "stable", "latest", "latest"]),
        ("like:u_t", ["multi"]),
        ("like:l_t", ["latest", "latest"]),
        ("like:%ab%", ["stable"]),
        ("other:latest", ["multi", "stable", "latest", "latest"]),
    ],
)
def test_list_filter_tag_name(api: httpx.Client, filter_value: str, expected_names: list[str]) -> None:
    rows = list_tags(api, filter_tag_name=filter_value)["tags"]

    assert [row["name"] for row in rows] == expected_names


def test_list_filter_without_colon_is_400(api: httpx.Client) -> None:
    response = api.get(TAGS, params={"filter_tag_name": "latest"})

    assert response.status_code == 400
    assert response.json() == {
        "message": "Unsupported syntax for filter_tag_name. Expected <operation>:<tag_name> where "
        "<operation>can be 'like' or 'eq'."
    }


def test_list_child_digest_is_not_listed(api: httpx.Client) -> None:
    digests = {row["manifest_digest"] for row in list_tags(api)["tags"]}

    assert CHILD not in digests


def test_list_without_trailing_slash_redirects(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.get(f"{REPOSITORY}/tag", params={"limit": "2"})

    location = f"{quay.url}/api/v1/repository/{REPOSITORY}/tag/?limit=2"
    assert response.status_code == 308
    assert response.headers["Location"] == location
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!doctype html>")
    assert f'<a href="{location}">' in response.text


def test_list_redirect_needs_no_token(quay: QuayDouble) -> None:
    response = httpx.get(f"{quay.url}/api/v1/repository/{REPOSITORY}/tag")

    assert response.status_code == 308


def test_list_unknown_repository_is_404(api: httpx.Client) -> None:
    response = api.get("acme/missing/tag/")

    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"


def test_list_works_on_read_only_repository(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_repository_state(REPOSITORY, "READ_ONLY")

    assert len(list_tags(api)["tags"]) == 4
