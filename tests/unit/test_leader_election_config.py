"""Leader election settings: the options, their variables, the namespace default and the timing rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from quay_tag_operator.__main__ import parse_args
from quay_tag_operator.config import ConfigError, OperatorConfig
from quay_tag_operator.leadership import LeaseTiming

ON = {"QUAY_TAG_OPERATOR_LEADER_ELECTION": "true"}


@pytest.fixture
def namespace_file(tmp_path: Path) -> Path:
    path = tmp_path / "namespace"
    path.write_text("operators\n")
    return path


def test_leader_election_off_by_default(tmp_path: Path) -> None:
    config = OperatorConfig.from_env({}, namespace_file=tmp_path / "missing")

    assert config.leader_election is False
    assert config.leader_election_namespace is None
    assert config.leader_election_id == "quay-tag-operator"


def test_defaults_match_client_go(namespace_file: Path) -> None:
    config = OperatorConfig.from_env(ON, namespace_file=namespace_file)

    assert LeaseTiming.from_config(config) == LeaseTiming(lease_duration=15, renew_deadline=10.0, retry_period=2.0)


def test_namespace_from_service_account(namespace_file: Path) -> None:
    config = OperatorConfig.from_env(ON, namespace_file=namespace_file)

    assert config.leader_election_namespace == "operators"


def test_namespace_variable_wins_over_file(namespace_file: Path) -> None:
    environ = {**ON, "QUAY_TAG_OPERATOR_LEADER_ELECTION_NAMESPACE": "elsewhere"}

    config = OperatorConfig.from_env(environ, namespace_file=namespace_file)

    assert config.leader_election_namespace == "elsewhere"


@pytest.mark.parametrize("content", [None, "", " \n"])
def test_namespace_required_outside_pod(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "namespace"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError, match="QUAY_TAG_OPERATOR_LEADER_ELECTION_NAMESPACE") as raised:
        OperatorConfig.from_env(ON, namespace_file=path)

    assert "--leader-election-namespace" in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LEADER_ELECTION_NAMESPACE", "Operators", "namespace name"),
        ("LEADER_ELECTION_NAMESPACE", "a.b", "namespace name"),
        ("LEADER_ELECTION_ID", "Quay_Lease", "Kubernetes object name"),
        ("LEADER_ELECTION_LEASE_DURATION", "15", "duration"),
        ("LEADER_ELECTION_LEASE_DURATION", "1.5s", "whole seconds"),
        ("LEADER_ELECTION_LEASE_DURATION", "500ms", "whole seconds"),
        ("LEADER_ELECTION_RENEW_DEADLINE", "15s", "shorter than the lease duration"),
        ("LEADER_ELECTION_RENEW_DEADLINE", "0", "shorter than the lease duration"),
        ("LEADER_ELECTION_RETRY_PERIOD", "10s", "shorter than the renew deadline"),
        ("LEADER_ELECTION_RETRY_PERIOD", "0", "shorter than the renew deadline"),
    ],
)
def test_invalid_setting_names_variable(namespace_file: Path, variable: str, value: str, message: str) -> None:
    environ = {**ON, f"QUAY_TAG_OPERATOR_{variable}": value}

    with pytest.raises(ConfigError, match=f"QUAY_TAG_OPERATOR_{variable}") as raised:
        OperatorConfig.from_env(environ, namespace_file=namespace_file)

    assert message in str(raised.value)
    assert "^" not in str(raised.value)


def test_timing_unchecked_when_off(tmp_path: Path) -> None:
    environ = {"QUAY_TAG_OPERATOR_LEADER_ELECTION_RETRY_PERIOD": "1h"}

    config = OperatorConfig.from_env(environ, namespace_file=tmp_path / "missing")

    assert config.leader_election is False


def test_short_timing_accepted(namespace_file: Path) -> None:
    environ = {
        **ON,
        "QUAY_TAG_OPERATOR_LEADER_ELECTION_LEASE_DURATION": "4s",
        "QUAY_TAG_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE": "2500ms",
        "QUAY_TAG_OPERATOR_LEADER_ELECTION_RETRY_PERIOD": "500ms",
    }

    timing = LeaseTiming.from_config(OperatorConfig.from_env(environ, namespace_file=namespace_file))

    assert timing == LeaseTiming(lease_duration=4, renew_deadline=2.5, retry_period=0.5)


def test_lease_timing_rejects_wrong_order() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseTiming(lease_duration=10, renew_deadline=10.0, retry_period=2.0)


def test_flag_absent_leaves_variable_alone() -> None:
    assert parse_args([]).leader_election is None
    assert parse_args(["--leader-election"]).leader_election is True


def test_options_parsed() -> None:
    args = parse_args(
        [
            "--leader-election-namespace",
            "operators",
            "--leader-election-id",
            "quay-tag-operator-test",
            "--leader-election-lease-duration",
            "30s",
            "--leader-election-renew-deadline",
            "20s",
            "--leader-election-retry-period",
            "4s",
        ]
    )

    assert args.leader_election_namespace == "operators"
    assert args.leader_election_id == "quay-tag-operator-test"
    assert args.leader_election_lease_duration == "30s"
    assert args.leader_election_renew_deadline == "20s"
    assert args.leader_election_retry_period == "4s"
