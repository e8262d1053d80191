"""Equality-based label selectors for splitting resources among operator instances."""

from __future__ import annotations

import pytest

from quay_tag_operator.config import ConfigError, OperatorConfig
from quay_tag_operator.selector import parse_selector


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("shard=a", {"shard": "a"}, True),
        ("shard=a", {"shard": "b"}, False),
        ("shard=a", {}, False),
        ("shard==a", {"shard": "a"}, True),
        ("shard!=a", {"shard": "b"}, True),
        ("shard!=a", {}, True),
        ("shard!=a", {"shard": "a"}, False),
        ("shard", {"shard": ""}, True),
        ("shard", {}, False),
        ("!legacy", {}, True),
        ("!legacy", {"legacy": "yes"}, False),
        ("team=web, shard=a", {"team": "web", "shard": "a"}, True),
        ("team=web,shard=a", {"team": "web"}, False),
        ("quaytag.dev/shard=east", {"quaytag.dev/shard": "east"}, True),
        ("shard=", {"shard": ""}, True),
    ],
)
def test_selector_matches_labels(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


def test_selector_round_trips_to_text() -> None:
    assert str(parse_selector("a=1, b!=2,c,!d")) == "a=1,b!=2,c,!d"


@pytest.mark.parametrize("text", ["", "shard=a,", "shard in (a,b)", "!shard=a", "-bad=a", "shard=a b", "k=" + "v" * 64])
def test_selector_rejects_invalid_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid label selector"):
        parse_selector(text)


def test_config_reads_label_selector() -> None:
    config = OperatorConfig.from_env({"QUAY_TAG_OPERATOR_LABEL_SELECTOR": "shard=a"})
    assert config.selector is not None
    assert config.selector.matches({"shard": "a"})


def test_config_rejects_invalid_label_selector() -> None:
    with pytest.raises(ConfigError, match="QUAY_TAG_OPERATOR_LABEL_SELECTOR"):
        OperatorConfig.from_env({"QUAY_TAG_OPERATOR_LABEL_SELECTOR": "shard in (a)"})
