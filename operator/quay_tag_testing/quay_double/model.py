"""Data types and name rules of the Quay double's registry state."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final

from .errors import TAG_NAME_MESSAGE


DEFAULT_TIME_MACHINE_SECONDS: Final = 14 * 24 * 3600

# Quay's LABELED_EXPIRATION_MINIMUM and LABELED_EXPIRATION_MAXIMUM defaults.
EXPIRATION_MIN_SECONDS: Final = 3600
EXPIRATION_MAX_SECONDS: Final = 104 * 7 * 24 * 3600

# Quay matches tag names with ^[\w][\w.-]{0,127}$, where \w also matches non-ASCII
# letters. The double keeps to ASCII, the tag grammar of the OCI distribution spec.
TAG_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# The digest grammar of the OCI image spec. The Quay API does not parse digests, but the
# admin methods reject malformed ones so that a typo in a test fails loudly.
DIGEST_PATTERN: Final = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

# Quay's REPOSITORY_NAME_REGEX. The namespace pattern is the double's own rule: lowercase
# alphanumeric runs joined by '.', '_' or '-'.
REPOSITORY_NAME_PATTERN: Final = re.compile(r"[a-z0-9][.a-z0-9_-]{0,254}")
NAMESPACE_PATTERN: Final = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


class RepositoryState(str, Enum):
    NORMAL = "NORMAL"
    READ_ONLY = "READ_ONLY"
    MIRROR = "MIRROR"


# Quay's RepositoryState is an IntEnum that its 503 message formats with "%s". On
# Python 3.12, the runtime of current Quay images, that prints the member's number.
QUAY_STATE_NUMBERS: Final = {
    RepositoryState.NORMAL: 0,
    RepositoryState.READ_ONLY: 1,
    RepositoryState.MIRROR: 2,
}


class Role(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


# An OAuth token's scopes cap the user's role. Other Quay scopes grant no repository
# access, so a token that has only those gets 403 on every tag endpoint.
SCOPE_ROLES: Final = {"repo:read": Role.READ, "repo:write": Role.WRITE, "repo:admin": Role.ADMIN}
KNOWN_SCOPES: Final = frozenset(
    [*SCOPE_ROLES, "repo:create", "user:read", "user:admin", "org:admin", "super:user"]
)


class Missing(Enum):
    """Type of :data:`MISSING`, the marker for a JSON key that is absent from a body."""

    MISSING = "MISSING"


MISSING: Final = Missing.MISSING



class NotFoundError(LookupError):
    """An admin or helper call named a repository, manifest or tag that does not exist."""


class InvalidInputError(ValueError):
    """An admin or helper call passed a malformed or conflicting value."""


@dataclass(frozen=True)
class Manifest:
    digest: str
    size: int | None
    is_manifest_list: bool = False
    children: tuple[str, ...] = ()


@dataclass
class TagRow:
    """One row of a tag's history, with times in Unix milliseconds."""

    id: int
    name: str
    manifest_digest: str
    start_ms: int
    end_ms: int | None = None
    reversion: bool = False
    immutable: bool = False
    # Set by DELETE with skipRecoveryPeriod. Hidden rows are never listed or alive.
    hidden: bool = False

    def is_alive(self, now_ms: int) -> bool:
        return not self.hidden and (self.end_ms is None or self.end_ms > now_ms)


@dataclass
class Repository:
    namespace: str
    name: str
    state: RepositoryState = RepositoryState.NORMAL
    manifests: dict[str, Manifest] = field(default_factory=dict)
    rows: list[TagRow] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def alive_row(self, tag: str, now_ms: int) -> TagRow | None:
        for row in self.rows:
            if row.name == tag and row.is_alive(now_ms):
                return row
        return None

    def alive_digests(self, now_ms: int) -> set[str]:
        """Return the digests that a PUT accepts: tagged by an alive row, or a child of one."""
        tagged = {row.manifest_digest for row in self.rows if row.is_alive(now_ms)}
        alive = set(tagged)
        for digest in tagged:
            alive.update(self.manifests[digest].children)
        return alive


@dataclass
class User:
    name: str
    roles: dict[str, Role]


@dataclass(frozen=True)
class Token:
    value: str
    user: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Identity:
    """The user and scopes behind a validated OAuth token."""

    user: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class TagQuery:
    """The parsed query arguments of the tag list endpoint."""

    page: int = 1
    limit: int = 50
    specific_tag: str | None = None
    filter_tag_name: str | None = None
    only_active_tags: bool = False


@dataclass(frozen=True)
class TagPage:
    """One page of tag history: copies of the rows, each with its manifest."""

    rows: list[tuple[TagRow, Manifest]]
    page: int
    has_additional: bool


@dataclass(frozen=True)
class GarbageReport:
    removed_rows: int
    removed_manifests: tuple[str, ...]


def parse_repository_name(full_name: str) -> tuple[str, str]:
    """Split ``namespace/name`` and raise InvalidInputError unless both parts are valid."""
    namespace, slash, name = full_name.partition("/")
    if not slash or not NAMESPACE_PATTERN.fullmatch(namespace) or not REPOSITORY_NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"invalid repository name {full_name!r}: expected namespace/name in lowercase, "
            "such as quayadmin/busybox"
        )
    return namespace, name


def is_valid_tag_name(tag: str) -> bool:
    return TAG_NAME_PATTERN.fullmatch(tag) is not None


def check_digest(digest: str) -> None:
    if not DIGEST_PATTERN.fullmatch(digest):
        raise InvalidInputError(f"invalid digest {digest!r}: expected algorithm:hex, such as sha256:<64 hex digits>")


def check_tag_name(tag: str) -> None:
    if not is_valid_tag_name(tag):
        raise InvalidInputError(f"invalid tag name {tag!r}: {TAG_NAME_MESSAGE}")


def parse_role(role: str) -> Role:
    try:
        return Role[role.upper()]
    except KeyError:
        raise InvalidInputError(f"invalid role {role!r}: expected read, write or admin") from None


def parse_repository_state(state: str) -> RepositoryState:
    try:
        return RepositoryState(state.upper())
    except ValueError:
        raise InvalidInputError(f"invalid repository state {state!r}: expected NORMAL, READ_ONLY or MIRROR") from None
