"""Claims of RepositoryTags on Quay tags, and which claim wins when two disagree.

kopf keeps an in-memory index of every resource's claim, keyed by Quay host,
repository and tag across all watched namespaces. The oldest claim wins (by
creation time, then uid); a younger claim with another digest writes nothing,
so two resources never flap one tag.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.urls import origin

ClaimKey = tuple[str, str, str]


@dataclass(frozen=True, order=True)
class Claim:
    """One resource's claim on a tag; the field order is the order of precedence."""

    created: str
    uid: str
    namespace: str
    name: str
    manifest_digest: str


def claim_key(spec: RepositoryTagSpec, config: OperatorConfig) -> ClaimKey | None:
    """Return (Quay server, repository, tag), or None when the resource names no server."""
    url = spec.connection.url if spec.connection is not None and spec.connection.url else config.quay_url
    if url is None:
        return None
    try:
        server = str(origin(url))
    except ValueError:
        return None
    return (server, spec.repository, spec.tag)


def conflicting_winner(own: Claim, claims: Iterable[Claim]) -> Claim | None:
    """Return the winning claim when it belongs to another resource and requests another digest."""
    winner = min(claims, default=own)
    if winner.uid == own.uid or winner.manifest_digest == own.manifest_digest:
        return None
    return winner
