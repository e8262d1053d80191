"""The pure decision step: what to do to Quay given the desired digest and the tag's history.

No I/O here. The reconcile loop calls ``decide``, performs the write, and calls
it again with the rejected action added when Quay returns 404, so the rules of
which write Quay accepts live in one function:

- PUT accepts only a manifest alive in the repository (tagged, or a child of a
  tagged manifest list).
- Restore accepts any manifest still stored, alive or referenced only by dead rows.
- A digest in the tag's own history is a rollback, so restore comes first. Any
  other digest is a PUT, and restore is the fallback for a manifest that only
  dead tags reference. When both are rejected, the image is not pushed yet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quay_tag_operator.quay.models import TagHistory


class Action(enum.Enum):
    NONE = "None"
    PUT = "Put"
    RESTORE = "Restore"
    WAIT = "Wait"


@dataclass(frozen=True)
class Decision:
    action: Action
    # The digest the alive row points at now, or None when the tag has no alive row.
    current_digest: str | None


def decide(
    desired_digest: str,
    history: TagHistory,
    *,
    now: float,
    rejected: frozenset[Action] = frozenset(),
) -> Decision:
    """Choose the one write, if any, that brings the tag to ``desired_digest``.

    ``rejected`` contains the writes that Quay already rejected with 404 in this pass.
    """
    alive = history.alive_row(now)
    current = alive.manifest_digest if alive is not None else None
    if current == desired_digest:
        return Decision(Action.NONE, current)

    if history.contains_digest(desired_digest) and Action.RESTORE not in rejected:
        return Decision(Action.RESTORE, current)
    if Action.PUT not in rejected:
        return Decision(Action.PUT, current)
    if Action.RESTORE not in rejected:
        return Decision(Action.RESTORE, current)
    return Decision(Action.WAIT, current)


# Quay keeps a tag's expiration between 1 hour and 104 weeks after the tag's start
# (endpoints/api/tag.py and data/model/oci/tag.py in quay/quay).
MIN_EXPIRATION_AFTER_START = 3600
MAX_EXPIRATION_AFTER_START = 104 * 7 * 24 * 3600


def expected_expiration(desired: int, start_ts: int) -> int:
    """Return the end time Quay stores for ``desired`` on a row that started at ``start_ts``."""
    earliest = start_ts + MIN_EXPIRATION_AFTER_START
    latest = start_ts + MAX_EXPIRATION_AFTER_START
    return min(max(desired, earliest), latest)


def decide_expiration(desired: int | None, history: TagHistory, *, now: float) -> int | None:
    """Return the expiration to send to Quay, or None when the alive row already has it.

    Call it once the alive row has the desired digest. ``desired`` is Unix seconds;
    None means the operator does not manage expiration.
    """
    if desired is None:
        return None
    alive = history.alive_row(now)
    if alive is None:
        return None
    if alive.end_ts is not None and abs(alive.end_ts - expected_expiration(desired, alive.start_ts)) <= 1:
        return None
    return desired
