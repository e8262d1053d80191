"""Operator-wide settings, read from QUAY_TAG_OPERATOR_* environment variables.

The command line (``python -m quay_tag_operator --help``) sets the same
variables, so the settings reach kopf's startup handler whether the operator
runs from the console script or from ``kopf run`` in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, field_validator

from quay_tag_operator.models import DURATION_PATTERN, PATTERN_RULES, URL_PATTERN, parse_duration
from quay_tag_operator.selector import LabelSelector, parse_selector

ENV_PREFIX = "QUAY_TAG_OPERATOR_"


class ConfigError(ValueError):
    """An operator setting is invalid; the message names the variable."""


class OperatorConfig(BaseModel):
    """Settings that apply to every RepositoryTag the operator handles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Quay server for resources without spec.connection.url.
    quay_url: Annotated[str | None, Field(default=None, pattern=URL_PATTERN)]
    # File with the OAuth access token for resources without spec.connection.tokenSecretRef.
    # It is read on every reconcile, so a rotated token takes effect without a restart.
    token_file: Path | None = None
    # CA bundle for TLS verification of every Quay server; None uses the system store.
    ca_bundle: FilePath | None = None
    # Rows of the tag's history kept in status, newest first (Quay's page size is the maximum).
    history_limit: Annotated[int, Field(ge=1, le=100)] = 20
    # Seconds before an HTTP request to Quay times out.
    request_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Re-read interval for resources without spec.refreshInterval; "0" turns periodic checks off.
    refresh_interval: Annotated[str, Field(pattern=DURATION_PATTERN)] = "5m"
    # Quay hosts (host or host:port) that resources may name in spec.connection.url, besides the
    # host of quay_url. Empty: only the host of quay_url.
    allowed_hosts: tuple[str, ...] = ()
    # Requests in flight to one Quay server at most, across all resources.
    max_concurrent_requests: Annotated[int, Field(ge=1, le=256)] = 8
    # Average requests per second to one Quay server, across all resources; 0 sets no limit.
    # The defaults match the /api/ limit of Quay's own nginx configuration (conf/nginx in
    # quay/quay: 5 requests per second per client address, burst 25).
    max_requests_per_second: Annotated[float, Field(ge=0, le=10_000)] = 5.0
    # Requests that may start at once after an idle spell, above the average rate.
    request_burst: Annotated[int, Field(ge=1, le=10_000)] = 25
    # Reconcile only the RepositoryTags whose labels match, so that several operator instances
    # can split one cluster's resources. None reconciles every resource it watches.
    label_selector: str | None = None
    # Port of the Prometheus /metrics endpoint; None serves no metrics.
    metrics_port: Annotated[int | None, Field(default=None, ge=1, le=65535)]
    metrics_address: str = "0.0.0.0"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip().lower() for host in value.split(",") if host.strip())
        return value

    @field_validator("label_selector")
    @classmethod
    def _check_selector(cls, value: str | None) -> str | None:
        if value is not None:
            parse_selector(value)
        return value

    @property
    def selector(self) -> LabelSelector | None:
        return parse_selector(self.label_selector) if self.label_selector is not None else None

    @property
    def refresh_seconds(self) -> float:
        return parse_duration(self.refresh_interval)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the settings from ``QUAY_TAG_OPERATOR_<FIELD>`` variables; empty ones are unset."""
        environ = os.environ if environ is None else environ
        values = {}
        for name in cls.model_fields:
            value = environ.get(ENV_PREFIX + name.upper(), "").strip()
            if value:
                values[name] = value
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            name = str(first["loc"][0])
            rule = first["msg"]
            if first["type"] == "string_pattern_mismatch":
                rule = PATTERN_RULES.get(name, rule)
            raise ConfigError(f"Invalid {ENV_PREFIX}{name.upper()}: {rule}") from None
