from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from quay_tag_operator.models import RepositoryTagSpec, parse_duration
from quay_tag_operator.quay.models import TagPage

FIXTURES = Path(__file__).parent.parent / "fixtures"
DIGEST = "sha256:57583a1b9c0a7509d3417387b4f43acf80d08cdcf5266ac87987be3f8f919d5d"


def spec(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"repository": "quayadmin/busybox", "tag": "test", "manifestDigest": DIGEST}
    values.update(changes)
    return values


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tag": "v1.2.3-rc.1"},
        {"tag": "_internal"},
        {"tag": "a" * 128},
        {"repository": "my-org/app.web_v2"},
        {"connection": {"url": "https://quay.example.com"}},
        {"connection": {"url": "http://127.0.0.1:8080/", "tokenSecretRef": {"name": "quay", "key": "token"}}},
        {"refreshInterval": "0"},
        {"refreshInterval": "10s"},
        {"refreshInterval": "1h30m"},
        {"refreshInterval": "168h"},
        {"deletionPolicy": "Delete"},
        {"deletionPolicy": "Orphan"},
        {"expiration": "2027-01-31T00:00:00Z"},
        {"expiration": "2027-01-31T09:00:00+09:00"},
        {"suspend": True},
    ],
)
def test_spec_accepts_valid_values(changes: dict[str, Any]) -> None:
    parsed = RepositoryTagSpec.model_validate(spec(**changes))
    assert parsed.manifest_digest == changes.get("manifestDigest", DIGEST)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"manifestDigest": "sha512:" + "a" * 64}, "manifestDigest"),
        ({"manifestDigest": "sha256:" + "A" * 64}, "manifestDigest"),
        ({"manifestDigest": "sha256:" + "a" * 63}, "manifestDigest"),
        ({"manifestDigest": "sha256:" + "a" * 65}, "manifestDigest"),
        ({"manifestDigest": " " + DIGEST}, "manifestDigest"),
        ({"tag": ".hidden"}, "tag"),
        ({"tag": "-dash"}, "tag"),
        ({"tag": "a" * 129}, "tag"),
        ({"tag": "täg"}, "tag"),
        ({"tag": ""}, "tag"),
        ({"tag": 5}, "tag"),
        ({"repository": "busybox"}, "repository"),
        ({"repository": "a/b/c"}, "repository"),
        ({"repository": "QuayAdmin/busybox"}, "repository"),
        ({"repository": ""}, "repository"),
        ({"connection": {"url": "ftp://quay.example.com"}}, "connection.url"),
        ({"connection": {"tokenSecretRef": {"name": "quay"}}}, "connection.tokenSecretRef.key"),
        ({"unknownField": True}, "unknownField"),
        ({"refreshInterval": "9s"}, "refreshInterval"),
        ({"refreshInterval": "169h"}, "refreshInterval"),
        ({"refreshInterval": "5 m"}, "refreshInterval"),
        ({"refreshInterval": "1d"}, "refreshInterval"),
        ({"refreshInterval": "-1m"}, "refreshInterval"),
        ({"deletionPolicy": "Remove"}, "deletionPolicy"),
        ({"expiration": "2027-01-31T00:00:00"}, "expiration"),
        ({"expiration": "next week"}, "expiration"),
        ({"suspend": "maybe"}, "suspend"),
    ],
)
def test_spec_rejects_invalid_values(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        RepositoryTagSpec.model_validate(spec(**changes))
    locations = [".".join(str(part) for part in error["loc"]) for error in raised.value.errors()]
    assert field in locations


def test_spec_missing_required_fields_are_named() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        RepositoryTagSpec.model_validate({})
    missing = {error["loc"][0] for error in raised.value.errors() if error["type"] == "missing"}
    assert missing == {"repository", "tag", "manifestDigest"}


def test_quay_docs_tag_list_parses() -> None:
    page = TagPage.model_validate_json((FIXTURES / "quay-docs-tag-list.json").read_bytes())
    assert page.page == 1
    assert page.has_additional is False
    assert [row.name for row in page.tags] == ["test", "example", "example", "test", "test"]
    alive = [row for row in page.tags if row.end_ts is None]
    assert len(alive) == 2
    assert all(row.expiration is None for row in alive)
    ended = [row for row in page.tags if row.end_ts is not None]
    assert all(row.expiration is not None for row in ended)
    assert {row.manifest_digest for row in page.tags} == {DIGEST}


def test_tag_row_ignores_unknown_fields() -> None:
    raw = json.loads((FIXTURES / "quay-docs-tag-list.json").read_text())
    raw["tags"][0]["immutable"] = True
    raw["tags"][0]["child_manifest_count"] = 3
    page = TagPage.model_validate(raw)
    assert page.tags[0].name == "test"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("500ms", 0.5), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0)],
)
def test_duration_parses_go_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "1d", "1h 30m", "-5m"])
def test_duration_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
