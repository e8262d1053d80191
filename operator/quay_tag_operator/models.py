"""The RepositoryTag resource: spec and status models.

Field names follow Kubernetes conventions (camelCase) through aliases, so the
models parse what the API server returns and dump what it accepts. The CRD in
crds/ enforces the same rules at admission; the operator checks them again in
case it runs against an older CRD.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic.alias_generators import to_camel

GROUP = "quaytag.dev"
VERSION = "v1alpha1"
PLURAL = "repositorytags"
KIND = "RepositoryTag"

# Quay's rules: util/names.py in quay/quay for repository and tag names, plus an
# exact namespace/name split because the operator addresses one repository.
REPOSITORY_PATTERN = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*/[a-z0-9][.a-z0-9_-]{0,254}$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
# A percent sign in the path must start an escape of two hex digits, as Go's url.Parse, which the
# CRD's url() rule calls, requires.
URL_PATTERN = r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/([A-Za-z0-9._~/-]|%[0-9A-Fa-f]{2})*)?$"
# A Kubernetes object name (DNS subdomain, RFC 1123).
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Go's duration syntax as Kubernetes and Argo CD users write it ("90s", "5m", "1h30m"), or "0".
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
# RFC 3339 date-time, the form of the CRD's format: date-time, with an offset that Python and RFC 3339
# accept (hours 00-23, minutes 00-59).
RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
EXPIRATION_RULE = "must be an RFC 3339 time with a time zone, such as 2027-01-31T00:00:00Z"
MIN_REFRESH_INTERVAL = 10.0
MAX_REFRESH_INTERVAL = 7 * 24 * 3600.0

# Plain-language forms of the patterns above, for messages about a value that does not match.
PATTERN_RULES = {
    "repository": "must be namespace/name in Quay's rules, such as quayadmin/busybox",
    "tag": "must be 1 to 128 ASCII letters, digits, _ . or -, not starting with . or -",
    "manifestDigest": "must be sha256: followed by 64 lower-case hex digits",
    "connection.url": "must be an http:// or https:// URL of a host, such as https://quay.example.com",
    "connection.tokenSecretRef.name": "must be a Kubernetes object name: lower-case letters, digits, - and .",
    "connection.caBundleConfigMapRef.name": "must be a Kubernetes object name: lower-case letters, digits, - and .",
    "connection.tokenSecretRef.key": "must contain only letters, digits, - _ and .",
    "connection.caBundleConfigMapRef.key": "must contain only letters, digits, - _ and .",
    "refreshInterval": "must be a duration such as 90s, 5m or 1h30m, or 0",
    "quay_url": "must be an http:// or https:// URL, such as https://quay.example.com",
    "refresh_interval": "must be a duration such as 90s, 5m or 1h30m, or 0",
}

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        frozen=True,
    )


class SecretKeyRef(_CamelModel):
    """Reference to one key of a Secret in the resource's own namespace."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class ConfigMapKeyRef(SecretKeyRef):
    """Reference to one key of a ConfigMap in the resource's own namespace."""


class Connection(_CamelModel):
    """Quay server and credentials of one resource; unset parts use operator defaults."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str | None, Field(default=None, max_length=2048, pattern=URL_PATTERN)]
    token_secret_ref: SecretKeyRef | None = None
    # PEM CA certificates for Quay's TLS certificate, in place of the operator's CA bundle.
    ca_bundle_config_map_ref: ConfigMapKeyRef | None = None

    @field_validator("url")
    @classmethod
    def _check_host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            port = re.match(r"^https?://[^/]*?(?::([0-9]+))?(?:/|$)", value)
            if port is not None and port.group(1) is not None and not 1 <= int(port.group(1)) <= 65535:
                raise ValueError("port must be between 1 and 65535")
            # Go's url.Parse, behind the CRD's rule, takes only an IPv6 address in brackets.
            bracketed = re.match(r"^https?://\[([^\]]*)\]", value)
            if bracketed is not None:
                try:
                    ipaddress.IPv6Address(bracketed.group(1))
                except ValueError:
                    raise ValueError("the host in brackets must be an IPv6 address, such as [::1]") from None
        return value


class RepositoryTagSpec(_CamelModel):
    """Desired state: one tag of one Quay repository and the digest it points at.

    Optional fields have no defaults in the CRD: the operator applies them here and
    never writes them back, so Argo CD finds no difference between Git and the cluster.
    """

    model_config = ConfigDict(extra="forbid")

    repository: Annotated[str, Field(max_length=511, pattern=REPOSITORY_PATTERN)]
    tag: Annotated[str, Field(max_length=128, pattern=TAG_PATTERN)]
    manifest_digest: Annotated[str, Field(pattern=DIGEST_PATTERN)]
    connection: Connection | None = None
    # How often the tag is re-read and drift corrected; None uses the operator's default, 0 turns it off.
    refresh_interval: Annotated[str | None, Field(default=None, max_length=32, pattern=DURATION_PATTERN)]
    deletion_policy: Literal["Orphan", "Delete"] | None = None
    # When set, the tag's expiration is kept at this time (Quay clamps it to 1 hour .. 104 weeks after the
    # tag's start); when absent, the operator leaves expiration alone.
    expiration: datetime.datetime | None = None
    # Strict, as in the CRD: "true" or 1 are not booleans.
    suspend: StrictBool | None = None

    @field_validator("refresh_interval")
    @classmethod
    def _check_refresh_interval(cls, value: str | None) -> str | None:
        if value is None:
            return None
        seconds = parse_duration(value)
        # Only "0" turns checks off; "0s" is a duration below 10s, as the CRD's rule has it.
        if value != "0" and not MIN_REFRESH_INTERVAL <= seconds <= MAX_REFRESH_INTERVAL:
            raise ValueError("must be 0 (off) or between 10s and 168h")
        return value

    @field_validator("expiration", mode="before")
    @classmethod
    def _check_expiration_form(cls, value: object) -> object:
        # pydantic alone also takes Unix seconds, a space in place of the T, +0900 and a time without
        # seconds, all of which the CRD's format: date-time rejects.
        if isinstance(value, str) and re.fullmatch(RFC3339_PATTERN, value) is None:
            raise ValueError(EXPIRATION_RULE)
        if not isinstance(value, str | datetime.datetime | None):
            raise ValueError(EXPIRATION_RULE)
        return value

    @field_validator("expiration")
    @classmethod
    def _check_expiration(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(EXPIRATION_RULE)
        return value

    @property
    def namespace_and_name(self) -> tuple[str, str]:
        namespace, name = self.repository.split("/", 1)
        return namespace, name


class Condition(_CamelModel):
    """A status condition in the standard Kubernetes form."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None


class HistoryEntry(_CamelModel):
    """One row of the tag's history as Quay lists it, with RFC 3339 times."""

    manifest_digest: str
    start_time: str
    # When the row stopped being the tag's target; absent on the alive row.
    end_time: str | None = None
    # Scheduled expiry of the alive row; absent on ended rows.
    expiration: str | None = None
    reversion: bool = False


def parse_duration(text: str) -> float:
    """Convert a duration such as "1h30m" or "0" to seconds."""
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"invalid duration {text!r}: expected a number and a unit (ms, s, m, h), such as 5m")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_time(moment: datetime.datetime) -> str:
    """Format a time as RFC 3339 in UTC with second precision, as Kubernetes does."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
