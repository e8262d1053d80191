"""Seed loading: sources, validation, relative and absolute times, and the demo seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from quay_tag_testing.quay_double import Clock, InvalidInputError, QuayDouble, Seed, build_registry, load_seed

from .seed_data import FROZEN_TIME, base_seed, make_digest

DEMO_SEED = Path(__file__).parent.parent.parent / "deploy" / "demo" / "quay-seed.yaml"
DOCS_DIGEST = "sha256:57583a1b9c0a7509d3417387b4f43acf80d08cdcf5266ac87987be3f8f919d5d"
DIGEST = make_digest("seed")


def minimal_seed(**tag: Any) -> dict[str, Any]:
    return {
        "frozen_time": FROZEN_TIME,
        "repositories": [
            {"name": "acme/app", "manifests": [{"digest": DIGEST, "size": 1}], "tags": [{"name": "t", **tag}]}
        ],
    }


def test_load_seed_accepts_model_dict_and_path(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(base_seed()))

    from_path = load_seed(path)
    from_string_path = load_seed(str(path))
    from_dict = load_seed(base_seed())
    from_model = load_seed(from_dict)

    assert from_path == from_dict
    assert from_string_path == from_dict
    assert from_model is from_dict


def test_double_accepts_seed_path(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(base_seed()))

    with QuayDouble(path) as quay:
        assert quay.alive_digest("acme/app", "stable") is not None


def test_empty_seed_file_is_empty_registry(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    assert load_seed(path) == Seed()


def test_seed_file_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")

    with pytest.raises(InvalidInputError, match="mapping"):
        load_seed(path)


@pytest.mark.parametrize(
    "tag",
    [
        {},
        {"digest": DIGEST, "history": [{"digest": DIGEST, "start_ts": 1}]},
        {"history": [{"digest": DIGEST}]},
        {"history": [{"digest": DIGEST, "start_ts": 1, "started_seconds_ago": 1}]},
        {"digest": DIGEST, "deleted_ts": 1, "deleted_seconds_ago": 1},
        {"digest": DIGEST, "deleted_seconds_ago": 1, "immutable": True},
        {"digest": DIGEST, "colour": "red"},
    ],
    ids=[
        "no-rows",
        "digest-and-history",
        "no-start",
        "two-starts",
        "two-deletions",
        "immutable-deleted",
        "unknown-key",
    ],
)
def test_seed_rejects_malformed_tag(tag: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        load_seed(minimal_seed(**tag))


def test_seed_rejects_unordered_history() -> None:
    seed = load_seed(
        minimal_seed(history=[{"digest": DIGEST, "start_ts": 200}, {"digest": DIGEST, "start_ts": 100}])
    )

    with pytest.raises(InvalidInputError, match="oldest first"):
        build_registry(seed)


def test_seed_rejects_unknown_token_user() -> None:
    seed = load_seed({"tokens": [{"token": "x", "user": "ghost"}]})

    with pytest.raises(LookupError, match="ghost"):
        build_registry(seed)


def test_seed_rejects_unknown_scope() -> None:
    seed = load_seed(
        {"users": [{"name": "alice"}], "tokens": [{"token": "x", "user": "alice", "scopes": ["repo:all"]}]}
    )

    with pytest.raises(InvalidInputError, match="repo:all"):
        build_registry(seed)


def test_seed_history_times() -> None:
    seed = load_seed(
        minimal_seed(
            history=[
                {"digest": DIGEST, "start_ts": FROZEN_TIME - 500},
                {"digest": DIGEST, "started_seconds_ago": 100, "reversion": True},
            ],
            deleted_seconds_ago=10,
        )
    )

    registry = build_registry(seed)

    state: Any = registry.snapshot()
    rows = state["repositories"][0]["tags"]
    assert [(row["start_ms"], row["end_ms"], row["reversion"]) for row in rows] == [
        ((FROZEN_TIME - 500) * 1000, (FROZEN_TIME - 100) * 1000, False),
        ((FROZEN_TIME - 100) * 1000, (FROZEN_TIME - 10) * 1000, True),
    ]


def test_seed_orders_lists_after_children() -> None:
    child = make_digest("child")
    seed = load_seed(
        {
            "repositories": [
                {
                    "name": "acme/app",
                    "manifests": [
                        {"digest": DIGEST, "is_manifest_list": True, "children": [child]},
                        {"digest": child, "size": 3},
                    ],
                }
            ]
        }
    )

    registry = build_registry(seed)

    assert registry.get_manifest("acme/app", DIGEST).children == (child,)


def test_seed_immutable_and_state() -> None:
    seed = minimal_seed(digest=DIGEST, immutable=True)
    seed["repositories"][0]["state"] = "MIRROR"

    state: Any = build_registry(load_seed(seed)).snapshot()

    assert state["repositories"][0]["state"] == "MIRROR"
    assert state["repositories"][0]["tags"][0]["immutable"] is True


def test_seed_without_frozen_time_uses_wall_clock() -> None:
    registry = build_registry(load_seed({}))

    assert not registry.clock.frozen


def test_explicit_clock_overrides_frozen_time() -> None:
    clock = Clock(frozen_at_ms=5_000)

    registry = build_registry(load_seed(base_seed()), clock)

    assert registry.clock.now_ms() == 5_000


def test_demo_seed_contents() -> None:
    with QuayDouble(DEMO_SEED) as quay:
        headers = {"Authorization": "Bearer demo-token"}
        busybox = httpx.get(quay.url + "/api/v1/repository/quayadmin/busybox/tag/", headers=headers)
        alpine = httpx.get(quay.url + "/api/v1/repository/quayadmin/alpine/tag/", headers=headers)
        moved = httpx.put(
            quay.url + "/api/v1/repository/quayadmin/busybox/tag/test",
            json={"manifest_digest": DOCS_DIGEST},
            headers=headers,
        )

    rows = busybox.json()["tags"]
    latest = [row for row in rows if row["name"] == "latest"]
    test = [row for row in rows if row["name"] == "test"]
    assert busybox.status_code == 200
    assert [row["manifest_digest"] for row in latest] == [DOCS_DIGEST]
    assert latest[0]["size"] == 2275314
    assert len(test) == 2
    # The demo's RepositoryTag for test requests DOCS_DIGEST, which is alive only under latest.
    assert "end_ts" not in test[0]
    assert DOCS_DIGEST not in {row["manifest_digest"] for row in test}
    assert alpine.status_code == 200
    assert len(alpine.json()["tags"]) == 1
    assert moved.status_code == 201
