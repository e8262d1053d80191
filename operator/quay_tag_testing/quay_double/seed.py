"""Seed files: the initial users, tokens, repositories, manifests and tag history of a double.

A seed is YAML (or a dict) with this shape. Every section is optional::

    frozen_time: 1716324069        # Unix seconds; the clock stays at this time until advanced
    namespaces:
      - name: quayadmin
        time_machine_seconds: 1209600
    users:
      - name: quayadmin            # always admin on its own namespace
        roles: {other-org: write}  # read, write or admin on further namespaces
    tokens:
      - token: demo-token
        user: quayadmin
        scopes: [repo:read, repo:write]
    repositories:
      - name: quayadmin/busybox
        state: NORMAL              # or READ_ONLY, MIRROR
        manifests:
          - digest: sha256:...
            size: 2275314
          - digest: sha256:...
            is_manifest_list: true
            children: [sha256:...]
        tags:
          - name: latest
            digest: sha256:...     # one alive row that starts when the seed is loaded
          - name: test
            history:               # oldest first; each row ends where the next starts
              - {digest: sha256:..., started_seconds_ago: 7200}
              - {digest: sha256:..., start_ts: 1716324069, reversion: true}
            deleted_seconds_ago: 60  # optional: the last row ended then, so no row is alive

Times are either absolute (``start_ts``, ``deleted_ts``, in Unix seconds) or relative
to the double's clock when the seed is loaded (``started_seconds_ago``,
``deleted_seconds_ago``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .clock import Clock
from .model import DEFAULT_TIME_MACHINE_SECONDS, InvalidInputError, RepositoryState
from .state import Registry


class _SeedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NamespaceSeed(_SeedModel):
    name: str
    time_machine_seconds: int = Field(default=DEFAULT_TIME_MACHINE_SECONDS, ge=0)


class UserSeed(_SeedModel):
    name: str
    roles: dict[str, Literal["read", "write", "admin"]] = Field(default_factory=dict)


class TokenSeed(_SeedModel):
    token: str = Field(min_length=1)
    user: str
    scopes: list[str] = Field(default_factory=lambda: ["repo:read", "repo:write"])


class ManifestSeed(_SeedModel):
    digest: str
    size: int | None = 0
    is_manifest_list: bool = False
    children: list[str] = Field(default_factory=list)


class RowSeed(_SeedModel):
    """One history row. Give exactly one of ``start_ts`` and ``started_seconds_ago``."""

    digest: str
    start_ts: float | None = None
    started_seconds_ago: float | None = Field(default=None, ge=0)
    reversion: bool = False

    @model_validator(mode="after")
    def _check_one_start(self) -> RowSeed:
        if (self.start_ts is None) == (self.started_seconds_ago is None):
            raise ValueError(f"row on {self.digest} needs exactly one of start_ts and started_seconds_ago")
        return self

    def start_ms(self, now_ms: int) -> int:
        if self.start_ts is not None:
            return round(self.start_ts * 1000)
        assert self.started_seconds_ago is not None
        return now_ms - round(self.started_seconds_ago * 1000)


class TagSeed(_SeedModel):
    """A tag, given either as one alive ``digest`` or as a ``history`` of rows."""

    name: str
    digest: str | None = None
    history: list[RowSeed] = Field(default_factory=list)
    deleted_ts: float | None = None
    deleted_seconds_ago: float | None = Field(default=None, ge=0)
    immutable: bool = False

    @model_validator(mode="after")
    def _check_shape(self) -> TagSeed:
        if (self.digest is None) == (not self.history):
            raise ValueError(f"tag {self.name!r} needs exactly one of digest and history")
        if self.deleted_ts is not None and self.deleted_seconds_ago is not None:
            raise ValueError(f"tag {self.name!r} can set deleted_ts or deleted_seconds_ago, not both")
        if self.immutable and (self.deleted_ts is not None or self.deleted_seconds_ago is not None):
            raise ValueError(f"tag {self.name!r} is deleted, so it has no alive row to make immutable")
        return self

    def rows(self) -> list[RowSeed]:
        if self.digest is not None:
            return [RowSeed(digest=self.digest, started_seconds_ago=0)]
        return self.history

    def deleted_ms(self, now_ms: int) -> int | None:
        if self.deleted_ts is not None:
            return round(self.deleted_ts * 1000)
        if self.deleted_seconds_ago is not None:
            return now_ms - round(self.deleted_seconds_ago * 1000)
        return None


class RepositorySeed(_SeedModel):
    name: str
    state: RepositoryState = RepositoryState.NORMAL
    manifests: list[ManifestSeed] = Field(default_factory=list)
    tags: list[TagSeed] = Field(default_factory=list)


class Seed(_SeedModel):
    frozen_time: float | None = Field(
        default=None, description="Unix seconds at which the clock stays until it is advanced."
    )
    namespaces: list[NamespaceSeed] = Field(default_factory=list)
    users: list[UserSeed] = Field(default_factory=list)
    tokens: list[TokenSeed] = Field(default_factory=list)
    repositories: list[RepositorySeed] = Field(default_factory=list)


SeedSource: TypeAlias = Seed | Mapping[str, Any] | str | os.PathLike[str]


def load_seed(source: SeedSource) -> Seed:
    """Return a Seed from a Seed, a dict, or the path of a YAML file."""
    if isinstance(source, Seed):
        return source
    if isinstance(source, Mapping):
        return Seed.model_validate(dict(source))
    text = Path(source).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"seed file {os.fspath(source)} must contain a mapping at the top level")
    return Seed.model_validate(data)


def build_registry(seed: Seed, clock: Clock | None = None) -> Registry:
    """Create a registry holding the seed's contents.

    ``clock`` defaults to a clock frozen at ``frozen_time``, or to wall time.
    """
    if clock is None:
        clock = Clock(round(seed.frozen_time * 1000)) if seed.frozen_time is not None else Clock()
    registry = Registry(clock)

    for namespace in seed.namespaces:
        registry.add_namespace(namespace.name, namespace.time_machine_seconds)
    for user in seed.users:
        registry.add_user(user.name, dict(user.roles))
    for token in seed.tokens:
        registry.add_token(token.token, token.user, token.scopes)
    for repository in seed.repositories:
        _add_repository(registry, repository)
    return registry


def _add_repository(registry: Registry, repository: RepositorySeed) -> None:
    registry.ensure_repository(repository.name)
    for manifest in _children_first(repository):
        registry.add_manifest(
            repository.name, manifest.digest, manifest.size, manifest.is_manifest_list, manifest.children
        )

    now_ms = registry.clock.now_ms()
    for tag in repository.tags:
        _add_tag_history(registry, repository.name, tag, now_ms)
    registry.set_repository_state(repository.name, repository.state)


def _add_tag_history(registry: Registry, repository: str, tag: TagSeed, now_ms: int) -> None:
    rows = tag.rows()
    starts = [row.start_ms(now_ms) for row in rows]
    if starts != sorted(starts):
        raise InvalidInputError(f"history of tag {tag.name!r} in {repository} must be ordered oldest first")

    ends: list[int | None] = [*starts[1:], tag.deleted_ms(now_ms)]
    for row, start_ms, end_ms in zip(rows, starts, ends):
        registry.insert_row(repository, tag.name, row.digest, start_ms, end_ms, row.reversion)
    if tag.immutable:
        registry.set_immutable(repository, tag.name, True)


def _children_first(repository: RepositorySeed) -> list[ManifestSeed]:
    """Order manifests so that every list comes after the children it names."""
    ordered: list[ManifestSeed] = []
    placed: set[str] = set()
    pending = list(repository.manifests)
    while pending:
        ready = [manifest for manifest in pending if all(child in placed for child in manifest.children)]
        if not ready:
            # The registry reports which children are missing.
            ordered.extend(pending)
            break
        for manifest in ready:
            ordered.append(manifest)
            placed.add(manifest.digest)
            pending.remove(manifest)
    return ordered
