"""The pure decision step: what to do to Quay given the desired digest and the tag's history.

No I/O here. The reconcile loop calls ``decide``, performs the write, and calls
it again with the rejected action added when Quay answers 404, so the rules of
which write Quay accepts live in one function:

- PUT accepts only a manifest alive in the repository (tagged, or a child of a
  tagged manifest list).
- Restore accepts any manifest still stored, alive or referenced only by dead rows.
- A digest in the tag's own history is a rollback, so restore comes first; any
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

    ``rejected`` holds the writes Quay already answered with 404 in this pass.
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
