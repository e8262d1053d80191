from __future__ import annotations

from pathlib import Path

import pytest

from quay_tag_operator.config import ConfigError, OperatorConfig


def test_config_defaults_without_variables() -> None:
    config = OperatorConfig.from_env({})
    assert config.quay_url is None
    assert config.token_file is None
    assert config.history_limit == 20


def test_config_reads_prefixed_variables() -> None:
    config = OperatorConfig.from_env(
        {
            "QUAY_TAG_OPERATOR_QUAY_URL": "https://quay.example.com",
            "QUAY_TAG_OPERATOR_TOKEN_FILE": "/var/run/quay/token",
            "QUAY_TAG_OPERATOR_HISTORY_LIMIT": "5",
            "QUAY_TAG_OPERATOR_REQUEST_TIMEOUT": "",
        }
    )
    assert config.quay_url == "https://quay.example.com"
    assert config.token_file == Path("/var/run/quay/token")
    assert config.history_limit == 5
    assert config.request_timeout == 10.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUAY_TAG_OPERATOR_HISTORY_LIMIT", "0"),
        ("QUAY_TAG_OPERATOR_HISTORY_LIMIT", "101"),
        ("QUAY_TAG_OPERATOR_HISTORY_LIMIT", "many"),
        ("QUAY_TAG_OPERATOR_QUAY_URL", "quay.example.com"),
        ("QUAY_TAG_OPERATOR_REQUEST_TIMEOUT", "-1"),
    ],
)
def test_config_invalid_value_names_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        OperatorConfig.from_env({variable: value})


def test_config_missing_ca_bundle_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="QUAY_TAG_OPERATOR_CA_BUNDLE"):
        OperatorConfig.from_env({"QUAY_TAG_OPERATOR_CA_BUNDLE": str(tmp_path / "missing.pem")})


def test_config_pattern_errors_are_plain() -> None:
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({"QUAY_TAG_OPERATOR_QUAY_URL": "quay.example.com"})
    assert "http:// or https:// URL" in str(raised.value)
    assert "^" not in str(raised.value)


def test_config_allowed_hosts_are_split() -> None:
    config = OperatorConfig.from_env({"QUAY_TAG_OPERATOR_ALLOWED_HOSTS": " Quay.Example.com, mirror:8443 ,"})
    assert config.allowed_hosts == ("quay.example.com", "mirror:8443")


def test_config_refresh_interval_parses() -> None:
    assert OperatorConfig.from_env({"QUAY_TAG_OPERATOR_REFRESH_INTERVAL": "90s"}).refresh_seconds == 90.0
    assert OperatorConfig.from_env({}).refresh_seconds == 300.0
