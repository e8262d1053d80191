"""Operator-wide settings, read from QUAY_TAG_OPERATOR_* environment variables.

The command line (``python -m quay_tag_operator --help``) sets the same
variables, so the settings reach kopf's startup handler whether the operator
runs from the console script or from ``kopf run`` in tests.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, field_validator

from quay_tag_operator.models import (
    DURATION_PATTERN,
    OBJECT_NAME_PATTERN,
    PATTERN_RULES,
    URL_PATTERN,
    parse_duration,
)
from quay_tag_operator.selector import LabelSelector, parse_selector

ENV_PREFIX = "QUAY_TAG_OPERATOR_"

# The namespace of the pod's service account, which the kubelet mounts into every pod that
# has a token. It is the default namespace of the leader election Lease.
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# A namespace name (DNS label, RFC 1123).
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

CONFIG_PATTERN_RULES = {
    "leader_election_namespace": "must be a namespace name: up to 63 lower-case letters, digits and -",
    "leader_election_id": "must be a Kubernetes object name: lower-case letters, digits, - and .",
    "leader_election_lease_duration": "must be a duration such as 15s",
    "leader_election_renew_deadline": "must be a duration such as 10s",
    "leader_election_retry_period": "must be a duration such as 2s",
}


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
    # Reconcile only while holding the coordination.k8s.io Lease leader_election_id in
    # leader_election_namespace, so that several replicas never write at once.
    leader_election: bool = False
    # None: the namespace in SERVICE_ACCOUNT_NAMESPACE_FILE, filled in by from_env.
    leader_election_namespace: Annotated[str | None, Field(default=None, max_length=63, pattern=NAMESPACE_PATTERN)]
    leader_election_id: Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)] = "quay-tag-operator"
    # How long other replicas wait after the last renewal they saw before they take the Lease over.
    # Whole seconds, because the Lease stores it in leaseDurationSeconds.
    leader_election_lease_duration: Annotated[str, Field(pattern=DURATION_PATTERN)] = "15s"
    # How long the leader keeps retrying a failed renewal before it stops reconciling. It is shorter
    # than the lease duration, so that the leader stops before another replica may start.
    leader_election_renew_deadline: Annotated[str, Field(pattern=DURATION_PATTERN)] = "10s"
    # Time between two attempts to acquire or renew the Lease.
    leader_election_retry_period: Annotated[str, Field(pattern=DURATION_PATTERN)] = "2s"

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

    @functools.cached_property
    def selector(self) -> LabelSelector | None:
        # Parsed once: kopf's filter reads it for every watch event.
        return parse_selector(self.label_selector) if self.label_selector is not None else None

    @property
    def refresh_seconds(self) -> float:
        return parse_duration(self.refresh_interval)

    @property
    def lease_duration_seconds(self) -> int:
        return int(parse_duration(self.leader_election_lease_duration))

    @property
    def renew_deadline_seconds(self) -> float:
        return parse_duration(self.leader_election_renew_deadline)

    @property
    def retry_period_seconds(self) -> float:
        return parse_duration(self.leader_election_retry_period)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
    ) -> OperatorConfig:
        """Read the settings from ``QUAY_TAG_OPERATOR_<FIELD>`` variables; empty ones are unset.

        With leader election on and no namespace set, the Lease's namespace is read from
        ``namespace_file``, the pod's service account namespace.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for name in cls.model_fields:
            value = environ.get(ENV_PREFIX + name.upper(), "").strip()
            if value:
                values[name] = value
        config = cls._validate(values)
        if config.leader_election and config.leader_election_namespace is None:
            values["leader_election_namespace"] = _read_service_account_namespace(namespace_file)
            config = cls._validate(values)
        if config.leader_election:
            config._check_leader_election_timing()
        return config

    @classmethod
    def _validate(cls, values: Mapping[str, str]) -> OperatorConfig:
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            name = str(first["loc"][0])
            rule = first["msg"]
            if first["type"] == "string_pattern_mismatch":
                rule = PATTERN_RULES.get(name) or CONFIG_PATTERN_RULES.get(name, rule)
            raise ConfigError(f"Invalid {ENV_PREFIX}{name.upper()}: {rule}") from None

    def _check_leader_election_timing(self) -> None:
        """Raise ConfigError unless retry period < renew deadline < lease duration, the order client-go checks too."""
        lease_duration = parse_duration(self.leader_election_lease_duration)
        if lease_duration < 1 or lease_duration != int(lease_duration):
            raise ConfigError(
                f"Invalid {ENV_PREFIX}LEADER_ELECTION_LEASE_DURATION: must be whole seconds, at least 1s, "
                "because the Lease stores it in leaseDurationSeconds"
            )
        if not 0 < self.renew_deadline_seconds < lease_duration:
            raise ConfigError(
                f"Invalid {ENV_PREFIX}LEADER_ELECTION_RENEW_DEADLINE: must be above 0 and shorter than the "
                f"lease duration ({self.leader_election_lease_duration}), so that the leader stops before "
                "another replica may take the Lease over"
            )
        if not 0 < self.retry_period_seconds < self.renew_deadline_seconds:
            raise ConfigError(
                f"Invalid {ENV_PREFIX}LEADER_ELECTION_RETRY_PERIOD: must be above 0 and shorter than the "
                f"renew deadline ({self.leader_election_renew_deadline}), so that a failed renewal is retried"
            )


def _read_service_account_namespace(path: Path) -> str:
    try:
        namespace = path.read_text(encoding="utf-8").strip()
    except OSError:
        namespace = ""
    if not namespace:
        raise ConfigError(
            f"Missing {ENV_PREFIX}LEADER_ELECTION_NAMESPACE: leader election needs the namespace of its Lease, "
            f"and {path} (the pod's service account namespace) is missing or empty. "
            "Set --leader-election-namespace."
        )
    return namespace
