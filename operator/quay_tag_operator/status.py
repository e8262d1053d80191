"""The one status writer: builds a RepositoryTag's status from an outcome.

The status is computed in memory and only the top-level fields whose value
changed go into the patch, so a pass that finds nothing new writes nothing.
``lastTransitionTime`` moves only when the Ready condition's status flips.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

import kubernetes

from quay_tag_operator import reasons
from quay_tag_operator.models import GROUP, PLURAL, VERSION, Condition, HistoryEntry, format_time
from quay_tag_operator.quay.models import TagHistory, TagRow
from quay_tag_operator.reconcile import Outcome

READY = "Ready"


class StatusWriteError(Exception):
    """The API server rejected a status patch."""


class StatusWriter:
    """Applies status patches as merge patches on the status subresource."""

    def __init__(self, api_client: Any) -> None:
        self._api = kubernetes.client.CustomObjectsApi(api_client)

    async def write(self, namespace: str, name: str, patch: Mapping[str, Any]) -> bool:
        """Apply ``patch`` and return True; return False when the resource is gone."""
        if not patch:
            return True
        try:
            await asyncio.to_thread(
                self._api.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(patch)},
                _content_type="application/merge-patch+json",
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return False
            raise StatusWriteError(f"Patching the status of {namespace}/{name} failed: {error.status} {error.reason}") from None
        return True


def build_status(
    outcome: Outcome,
    *,
    current: Mapping[str, Any],
    generation: int,
    now: datetime.datetime,
    history_limit: int,
) -> dict[str, Any]:
    """Return the full status that ``outcome`` calls for, keeping what it did not observe."""
    status: dict[str, Any] = {"observedGeneration": generation}
    status["conditions"] = _conditions(outcome, current, generation, now)

    if outcome.history is not None:
        alive = outcome.history.alive_row(now.timestamp())
        status["currentDigest"] = alive.manifest_digest if alive is not None else None
        status["history"] = history_entries(outcome.history, now=now, limit=history_limit)

    if _confirms_sync(outcome, current, generation):
        status["lastSyncTime"] = format_time(now)
    return status


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Return the top-level fields of ``desired`` that differ from ``current``."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


def history_entries(history: TagHistory, *, now: datetime.datetime, limit: int) -> list[dict[str, Any]]:
    """Convert the newest ``limit`` rows to status entries."""
    return [_entry(row, now.timestamp()).model_dump(by_alias=True, exclude_none=True) for row in history.rows[:limit]]


def _entry(row: TagRow, now: float) -> HistoryEntry:
    end_time = None
    expiration = None
    if row.end_ts is not None:
        moment = format_time(datetime.datetime.fromtimestamp(row.end_ts, datetime.UTC))
        if row.end_ts > now:
            expiration = moment
        else:
            end_time = moment
    return HistoryEntry(
        manifest_digest=row.manifest_digest,
        start_time=format_time(datetime.datetime.fromtimestamp(row.start_ts, datetime.UTC)),
        end_time=end_time,
        expiration=expiration,
        reversion=row.reversion,
    )


def _conditions(
    outcome: Outcome,
    current: Mapping[str, Any],
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    existing = [c for c in current.get("conditions") or [] if isinstance(c, Mapping)]
    previous = next((c for c in existing if c.get("type") == READY), None)
    status = "True" if outcome.reason.ready else "False"

    transition_time = format_time(now)
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition_time = str(previous["lastTransitionTime"])

    ready = Condition(
        type=READY,
        status=status,
        reason=outcome.reason.name,
        message=outcome.message,
        last_transition_time=transition_time,
        observed_generation=generation,
    )
    others = [dict(c) for c in existing if c.get("type") != READY]
    return [ready.model_dump(by_alias=True), *others]


def _confirms_sync(outcome: Outcome, current: Mapping[str, Any], generation: int) -> bool:
    # lastSyncTime marks when the operator last wrote the tag or first saw it in
    # sync after a change. Later in-sync passes leave it alone, so they write nothing.
    if outcome.reason is not reasons.IN_SYNC:
        return False
    if outcome.written is not None or not current.get("lastSyncTime"):
        return True
    if current.get("observedGeneration") != generation:
        return True
    previous = next(
        (c for c in current.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == READY),
        None,
    )
    return previous is None or previous.get("reason") != reasons.IN_SYNC.name
