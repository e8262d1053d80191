"""In-memory registry state of the Quay double, and Quay's rules for tag history.

Pure Python without I/O. The HTTP layer calls the API methods (``authenticate`` to
``delete_tag``) in the order that Quay's decorators run. Those methods raise
:class:`QuayError` with Quay's status and body. The setup and admin methods
(``add_manifest``, ``move_tag`` and the others) raise :class:`NotFoundError` or
:class:`InvalidInputError`, which are never sent as Quay responses.

The data types live in ``model.py`` and are re-exported here.

Every public method takes ``Registry.lock``, a reentrant lock, so the server thread and
a test thread can share one registry. Callers that need several calls to see one
consistent state hold the lock around them.

The rules follow Quay's ``endpoints/api/tag.py`` and ``data/model/oci/tag.py``:

- A tag name has one alive row at most. A row is alive while its end is unset or in
  the future, and it is not hidden.
- Every PUT with a digest and every restore ends the alive row at ``now`` and inserts
  a new row that starts at the same instant, even when the digest does not change.
- Dead rows stay listed, and their manifests stay restorable, until garbage collection
  removes rows that ended longer ago than the namespace's time-machine window.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping

from .clock import Clock
from .errors import (
    BAD_REQUEST_MESSAGE,
    FILTER_SYNTAX_MESSAGE,
    TAG_NAME_MESSAGE,
    JSONValue,
    framework_error,
    insufficient_scope,
    invalid_request,
    not_found,
    requires_authentication,
    tag_immutable,
)
from .model import (
    DEFAULT_TIME_MACHINE_SECONDS,
    EXPIRATION_MAX_SECONDS,
    EXPIRATION_MIN_SECONDS,
    KNOWN_SCOPES,
    MISSING,
    NAMESPACE_PATTERN,
    QUAY_STATE_NUMBERS,
    SCOPE_ROLES,
    GarbageReport,
    Identity,
    InvalidInputError,
    Manifest,
    Missing,
    NotFoundError,
    Repository,
    RepositoryState,
    Role,
    TagPage,
    TagQuery,
    TagRow,
    Token,
    User,
    check_digest,
    check_tag_name,
    is_valid_tag_name,
    parse_repository_name,
    parse_repository_state,
    parse_role,
)

__all__ = [
    "Clock",
    "DEFAULT_TIME_MACHINE_SECONDS",
    "GarbageReport",
    "Identity",
    "InvalidInputError",
    "Manifest",
    "MISSING",
    "Missing",
    "NotFoundError",
    "Registry",
    "Repository",
    "RepositoryState",
    "Role",
    "TagPage",
    "TagQuery",
    "TagRow",
    "parse_repository_name",
]

_NameMatcher = Callable[[str], bool]


class Registry:
    """Repositories, manifests, tag history, users and tokens of one Quay double."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.lock = threading.RLock()
        self._repositories: dict[tuple[str, str], Repository] = {}
        self._time_machine_seconds: dict[str, int] = {}
        self._users: dict[str, User] = {}
        self._tokens: dict[str, Token] = {}
        self._next_row_id = 1

    # Setup and admin methods.

    def add_namespace(self, namespace: str, time_machine_seconds: int = DEFAULT_TIME_MACHINE_SECONDS) -> None:
        """Register a namespace, or change its time-machine window, in seconds."""
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise InvalidInputError(f"invalid namespace {namespace!r}: use lowercase letters, digits, '.', '_' or '-'")
        if time_machine_seconds < 0:
            raise InvalidInputError(f"time_machine_seconds must not be negative, got {time_machine_seconds}")
        with self.lock:
            self._time_machine_seconds[namespace] = time_machine_seconds

    def add_user(self, name: str, roles: Mapping[str, Role | str] | None = None) -> None:
        """Add a user with admin on its own namespace and the given roles on others."""
        resolved = {name: Role.ADMIN}
        for namespace, role in (roles or {}).items():
            resolved[namespace] = role if isinstance(role, Role) else parse_role(role)
        with self.lock:
            for namespace in resolved:
                self._time_machine_seconds.setdefault(namespace, DEFAULT_TIME_MACHINE_SECONDS)
            self._users[name] = User(name, resolved)

    def add_token(self, token: str, user: str, scopes: Iterable[str]) -> None:
        scope_set = frozenset(scopes)
        unknown = sorted(scope_set - KNOWN_SCOPES)
        if unknown:
            raise InvalidInputError(f"unknown OAuth scopes {unknown}: expected some of {sorted(KNOWN_SCOPES)}")
        if not token:
            raise InvalidInputError("token must not be empty")
        with self.lock:
            if user not in self._users:
                raise NotFoundError(f"user {user!r} not found: add the user before its tokens")
            self._tokens[token] = Token(token, user, scope_set)

    def ensure_repository(self, full_name: str) -> Repository:
        """Return the repository, creating it in NORMAL state if it does not exist."""
        namespace, name = parse_repository_name(full_name)
        with self.lock:
            repository = self._repositories.get((namespace, name))
            if repository is None:
                repository = Repository(namespace, name)
                self._repositories[(namespace, name)] = repository
                self._time_machine_seconds.setdefault(namespace, DEFAULT_TIME_MACHINE_SECONDS)
            return repository

    def add_manifest(
        self,
        repository: str,
        digest: str,
        size: int | None = 0,
        is_manifest_list: bool = False,
        children: Iterable[str] = (),
    ) -> Manifest:
        """Store a manifest in a repository, creating the repository if needed.

        A manifest list must name children that are already stored, and its size is
        always None, as in Quay. Adding the same manifest twice is a no-op, but adding
        a different manifest under a stored digest raises InvalidInputError.
        """
        check_digest(digest)
        child_digests = tuple(children)
        if is_manifest_list:
            size = None
        elif child_digests:
            raise InvalidInputError(f"manifest {digest} has children but is_manifest_list is false")
        elif size is None or size < 0:
            raise InvalidInputError(f"manifest {digest} needs a size of 0 or more bytes, got {size}")
        manifest = Manifest(digest, size, is_manifest_list, child_digests)

        with self.lock:
            repo = self.ensure_repository(repository)
            missing_children = [child for child in child_digests if child not in repo.manifests]
            if missing_children:
                raise InvalidInputError(
                    f"manifest list {digest} names children that {repo.full_name} does not store: "
                    f"{missing_children}. Add the child manifests first."
                )
            stored = repo.manifests.get(digest)
            if stored is not None and stored != manifest:
                raise InvalidInputError(f"{repo.full_name} already stores {digest} with other content: {stored}")
            repo.manifests[digest] = manifest
            return manifest

    def move_tag(self, repository: str, tag: str, digest: str) -> TagRow:
        """Point a tag at a stored manifest by hand, as a push or a mirror sync would.

        The alive row ends and a new row starts at the same instant. This bypasses
        authentication, the repository state and tag immutability.
        """
        check_tag_name(tag)
        with self.lock:
            repo = self._existing_repository(repository)
            if digest not in repo.manifests:
                raise NotFoundError(f"{repo.full_name} does not store manifest {digest}: add it first")
            row = self._retarget(repo, tag, digest, reversion=False, now_ms=self.clock.now_ms(), check_immutable=False)
            return dataclasses.replace(row)

    def insert_row(
        self,
        repository: str,
        tag: str,
        digest: str,
        start_ms: int,
        end_ms: int | None = None,
        reversion: bool = False,
    ) -> TagRow:
        """Insert a history row as it is, for seeding. Nothing else is ended or checked for overlap."""
        check_tag_name(tag)
        if end_ms is not None and end_ms < start_ms:
            raise InvalidInputError(f"row of tag {tag!r} ends ({end_ms}) before it starts ({start_ms})")
        with self.lock:
            repo = self._existing_repository(repository)
            if digest not in repo.manifests:
                raise NotFoundError(f"{repo.full_name} does not store manifest {digest}: add it first")
            row = self._new_row(repo, tag, digest, start_ms, end_ms, reversion)
            return dataclasses.replace(row)

    def get_manifest(self, repository: str, digest: str) -> Manifest:
        with self.lock:
            repo = self._existing_repository(repository)
            manifest = repo.manifests.get(digest)
            if manifest is None:
                raise NotFoundError(f"{repo.full_name} does not store manifest {digest}")
            return manifest

    def alive_digest(self, repository: str, tag: str) -> str | None:
        with self.lock:
            row = self._existing_repository(repository).alive_row(tag, self.clock.now_ms())
            return row.manifest_digest if row is not None else None

    def set_repository_state(self, repository: str, state: RepositoryState | str) -> None:
        resolved = state if isinstance(state, RepositoryState) else parse_repository_state(state)
        with self.lock:
            self._existing_repository(repository).state = resolved

    def set_immutable(self, repository: str, tag: str, immutable: bool = True) -> None:
        """Mark the alive row of a tag immutable or mutable, as Quay 3.17 stores it."""
        with self.lock:
            repo = self._existing_repository(repository)
            row = repo.alive_row(tag, self.clock.now_ms())
            if row is None:
                raise NotFoundError(f"{repo.full_name} has no alive tag {tag!r}")
            row.immutable = immutable

    def collect_garbage(self) -> GarbageReport:
        """Remove expired history and the manifests that nothing references any more.

        A row is removed once it ended at least the namespace's time-machine window ago.
        A manifest is then removed unless a remaining row references it or it is a
        child of such a manifest. Untagged manifests, including those added without a
        tag, are removed on the first collection.
        """
        with self.lock:
            now_ms = self.clock.now_ms()
            removed_rows = 0
            removed_manifests: list[str] = []
            for repo in self._repositories.values():
                cutoff_ms = now_ms - self._time_machine_seconds[repo.namespace] * 1000
                remaining_rows = [row for row in repo.rows if row.end_ms is None or row.end_ms > cutoff_ms]
                removed_rows += len(repo.rows) - len(remaining_rows)
                repo.rows = remaining_rows

                referenced = {row.manifest_digest for row in remaining_rows}
                for digest in list(referenced):
                    referenced.update(repo.manifests[digest].children)
                for digest in list(repo.manifests):
                    if digest not in referenced:
                        del repo.manifests[digest]
                        removed_manifests.append(f"{repo.full_name}@{digest}")
            return GarbageReport(removed_rows, tuple(removed_manifests))

    def snapshot(self) -> dict[str, JSONValue]:
        """Return the whole state as JSON-ready data. Token values are left out."""
        with self.lock:
            now_ms = self.clock.now_ms()
            repositories: list[JSONValue] = [
                _repository_snapshot(repo, now_ms) for _, repo in sorted(self._repositories.items())
            ]
            namespaces: list[JSONValue] = [
                {"name": name, "time_machine_seconds": seconds}
                for name, seconds in sorted(self._time_machine_seconds.items())
            ]
            users: list[JSONValue] = [
                {"name": user.name, "roles": {ns: role.name.lower() for ns, role in sorted(user.roles.items())}}
                for _, user in sorted(self._users.items())
            ]
            return {"now_ms": now_ms, "namespaces": namespaces, "users": users, "repositories": repositories}

    # Quay API methods, called in the order that Quay's decorators run.

    def authenticate(self, authorization: str | None) -> Identity:
        """Resolve an ``Authorization: Bearer`` header, or raise 401.

        Quay's API ignores basic auth, so robot credentials and passwords give 401 too.
        """
        parts = (authorization or "").split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise requires_authentication()
        with self.lock:
            token = self._tokens.get(parts[1])
            if token is None or token.user not in self._users:
                raise requires_authentication()
            return Identity(token.user, token.scopes)

    def authorize(self, identity: Identity, namespace: str, required: Role) -> None:
        """Raise 403 unless the user's namespace role, capped by the token's scopes, reaches ``required``.

        This check runs before any lookup. So a namespace that does not exist and another
        user's namespace both give 403, and only a user who may see the namespace learns
        from a 404 that a repository does not exist.
        """
        with self.lock:
            user = self._users.get(identity.user)
            namespace_role = user.roles.get(namespace) if user else None
        scope_roles = [SCOPE_ROLES[scope] for scope in identity.scopes if scope in SCOPE_ROLES]
        if namespace_role is None or not scope_roles:
            raise insufficient_scope()
        if min(namespace_role, max(scope_roles)) < required:
            raise insufficient_scope()

    def require_normal_state(self, namespace: str, name: str) -> None:
        """Raise 503 if the repository exists and is read-only or a mirror."""
        with self.lock:
            repo = self._repositories.get((namespace, name))
            if repo is None or repo.state is RepositoryState.NORMAL:
                return
            state_number = QUAY_STATE_NUMBERS[repo.state]
        raise framework_error(503, f"Repository is in read only or mirror mode: {state_number}")

    def list_tags(self, namespace: str, name: str, query: TagQuery) -> TagPage:
        """Return one page of history, newest start first and then by tag name."""
        with self.lock:
            repo = self._repository_or_404(namespace, name)
            now_ms = self.clock.now_ms()
            name_matches = _tag_name_filter(query.filter_tag_name)

            if query.only_active_tags:
                rows = [row for row in repo.rows if row.is_alive(now_ms)]
            else:
                rows = [row for row in repo.rows if not row.hidden]
            if query.specific_tag is not None:
                rows = [row for row in rows if row.name == query.specific_tag]
            rows = [row for row in rows if name_matches(row.name)]
            # Quay sorts by start and name only. The row id breaks the remaining ties
            # so that, of two rows started in the same millisecond, the newer comes first.
            rows.sort(key=lambda row: (-row.start_ms, row.name, -row.id))

            offset = query.limit * (query.page - 1)
            window = rows[offset : offset + query.limit + 1]
            page_rows = [
                (dataclasses.replace(row), repo.manifests[row.manifest_digest]) for row in window[: query.limit]
            ]
            return TagPage(page_rows, query.page, len(window) > query.limit)

    def change_tag(
        self,
        namespace: str,
        name: str,
        tag: str,
        expiration: float | None | Missing = MISSING,
        manifest_digest: str | None | Missing = MISSING,
    ) -> None:
        """Apply a PUT on a tag: first the expiration, then the move, as Quay does.

        Both parts are optional. A body with neither changes nothing and still succeeds.
        Because the expiration is stored first, a PUT that then fails with 404 on the
        digest keeps the new expiration.
        """
        if not is_valid_tag_name(tag):
            raise framework_error(400, TAG_NAME_MESSAGE)
        with self.lock:
            repo = self._repository_or_404(namespace, name)
            now_ms = self.clock.now_ms()

            if expiration is not MISSING:
                row = repo.alive_row(tag, now_ms)
                if row is None:
                    raise not_found()
                # NOTE: whether Quay rejects an expiration change on an immutable tag is
                # a guess. Its tests only show 409 for moves, restores and deletes.
                if row.immutable:
                    raise tag_immutable(tag)
                row.end_ms = _expiration_end_ms(row, expiration, now_ms)

            if manifest_digest is not MISSING:
                if manifest_digest is None or manifest_digest not in repo.alive_digests(now_ms):
                    raise not_found()
                self._retarget(repo, tag, manifest_digest, reversion=False, now_ms=now_ms, check_immutable=True)

    def restore_tag(self, namespace: str, name: str, tag: str, manifest_digest: str | None) -> None:
        """Point a tag at any manifest the repository still stores, as a reversion row.

        Like Quay, this does not check the tag name, so it can create a tag that PUT
        would reject.
        """
        with self.lock:
            repo = self._repository_or_404(namespace, name)
            if manifest_digest is None:
                raise invalid_request("Missing manifest_digest")
            if manifest_digest not in repo.manifests:
                raise not_found()
            self._retarget(repo, tag, manifest_digest, reversion=True, now_ms=self.clock.now_ms(), check_immutable=True)

    def delete_tag(self, namespace: str, name: str, tag: str, skip_recovery_period: bool = False) -> None:
        """End the alive row of a tag. The row stays in history unless ``skip_recovery_period``.

        With ``skip_recovery_period`` the row is hidden and its end is set one
        time-machine window in the past, so the next garbage collection removes it.
        """
        with self.lock:
            repo = self._repository_or_404(namespace, name)
            now_ms = self.clock.now_ms()
            row = repo.alive_row(tag, now_ms)
            if row is None:
                raise not_found()
            if row.immutable:
                raise tag_immutable(tag)
            if skip_recovery_period:
                row.end_ms = now_ms - self._time_machine_seconds[namespace] * 1000
                row.hidden = True
            else:
                row.end_ms = now_ms

    # Internal helpers. Callers hold the lock.

    def _existing_repository(self, full_name: str) -> Repository:
        namespace, name = parse_repository_name(full_name)
        repo = self._repositories.get((namespace, name))
        if repo is None:
            raise NotFoundError(f"repository {full_name} not found: add a manifest to create it")
        return repo

    def _repository_or_404(self, namespace: str, name: str) -> Repository:
        repo = self._repositories.get((namespace, name))
        if repo is None:
            raise not_found()
        return repo

    def _retarget(
        self, repo: Repository, tag: str, digest: str, *, reversion: bool, now_ms: int, check_immutable: bool
    ) -> TagRow:
        existing = repo.alive_row(tag, now_ms)
        if existing is not None:
            if check_immutable and existing.immutable:
                raise tag_immutable(tag)
            existing.end_ms = now_ms
        # The new row never inherits an expiration or the immutable flag.
        return self._new_row(repo, tag, digest, now_ms, None, reversion)

    def _new_row(
        self, repo: Repository, tag: str, digest: str, start_ms: int, end_ms: int | None, reversion: bool
    ) -> TagRow:
        row = TagRow(self._next_row_id, tag, digest, start_ms, end_ms, reversion)
        self._next_row_id += 1
        repo.rows.append(row)
        return row


def _expiration_end_ms(row: TagRow, expiration: float | None, now_ms: int) -> int | None:
    """Compute a row's new end from a requested expiration in Unix seconds.

    The expiration must lie in the future. Quay then clamps the distance from the
    row's start, truncated to whole seconds, into 1 hour .. 104 weeks.
    """
    if expiration is None:
        return None
    # Quay converts with datetime.utcfromtimestamp, which rejects values outside the
    # years 1..9999. Quay rejects those with the same plain 400 as a past expiration.
    if not math.isfinite(expiration) or not -62_135_596_800 <= expiration < 253_402_300_800:
        raise framework_error(400, BAD_REQUEST_MESSAGE)
    if expiration * 1000 <= now_ms:
        raise framework_error(400, BAD_REQUEST_MESSAGE)

    offset_seconds = math.floor(expiration) - row.start_ms // 1000
    offset_seconds = min(max(offset_seconds, EXPIRATION_MIN_SECONDS), EXPIRATION_MAX_SECONDS)
    return row.start_ms + offset_seconds * 1000


def _tag_name_filter(filter_tag_name: str | None) -> _NameMatcher:
    """Build the matcher for ``filter_tag_name``, or raise 400 for a value without a colon.

    ``like:`` is SQL ILIKE on ``%value%`` without escaping, so ``%`` and ``_`` in the
    value are wildcards, as in Quay. An operation other than ``like`` or ``eq`` filters
    nothing, as in Quay.
    """
    if filter_tag_name is None:
        return _match_all
    operation, colon, value = filter_tag_name.partition(":")
    if not colon:
        raise framework_error(400, FILTER_SYNTAX_MESSAGE)
    if operation == "eq":
        return lambda name: name == value
    if operation == "like":
        pattern = re.compile(_like_to_regex(value), re.IGNORECASE | re.DOTALL)
        return lambda name: pattern.fullmatch(name) is not None
    return _match_all


def _match_all(name: str) -> bool:
    return True


def _like_to_regex(value: str) -> str:
    """Translate the ILIKE pattern ``%value%`` to a regex, with backslash as PostgreSQL's escape."""
    parts = [".*"]
    characters = iter(value)
    for character in characters:
        if character == "\\":
            parts.append(re.escape(next(characters, "\\")))
        elif character == "%":
            parts.append(".*")
        elif character == "_":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    parts.append(".*")
    return "".join(parts)


def _repository_snapshot(repo: Repository, now_ms: int) -> JSONValue:
    manifests: list[JSONValue] = [
        {
            "digest": manifest.digest,
            "size": manifest.size,
            "is_manifest_list": manifest.is_manifest_list,
            "children": list(manifest.children),
        }
        for manifest in repo.manifests.values()
    ]
    rows: list[JSONValue] = [
        {
            "id": row.id,
            "name": row.name,
            "manifest_digest": row.manifest_digest,
            "start_ms": row.start_ms,
            "end_ms": row.end_ms,
            "reversion": row.reversion,
            "immutable": row.immutable,
            "hidden": row.hidden,
            "alive": row.is_alive(now_ms),
        }
        for row in repo.rows
    ]
    return {"repository": repo.full_name, "state": repo.state.value, "manifests": manifests, "tags": rows}
