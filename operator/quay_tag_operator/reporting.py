"""Events and log lines for what a pass or a deletion did.

Events and INFO logs mark transitions: a write, or a change of the Ready reason.
Passes that end with the same reason as before log at DEBUG and post no Event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from quay_tag_operator import metrics, reasons, status
from quay_tag_operator.decision import Action
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.reconcile import Outcome

Logger = logging.Logger | logging.LoggerAdapter[Any]


def report(
    body: kopf.Body,
    outcome: Outcome,
    spec: RepositoryTagSpec | None,
    previous_reason: str | None,
    was_in_sync: bool,
    logger: Logger,
) -> None:
    """Post the Events and log lines for one pass; ``previous_reason`` is the Ready reason before it."""
    # A write that did not take effect is reported by its WriteNotApplied warning alone.
    if outcome.written is not None and spec is not None and outcome.reason is reasons.IN_SYNC:
        event_reason, message = _write_message(outcome, spec, was_in_sync)
        if was_in_sync:
            metrics.DRIFT_CORRECTIONS.inc()
        logger.info(message)
        kopf.info(body, reason=event_reason, message=message)
    if outcome.expiration_set and spec is not None:
        message = f"Set the expiration of tag {spec.tag} of {spec.repository} to {spec.expiration}."
        logger.info(message)
        kopf.info(body, reason="ExpirationSet", message=message)

    if previous_reason == outcome.reason.name:
        logger.debug("%s: %s", outcome.reason.name, outcome.message)
        return
    if outcome.reason.ready:
        logger.info("Ready: %s", outcome.message)
        kopf.info(body, reason=outcome.reason.name, message=outcome.message)
    else:
        logger.warning("Not ready (%s): %s", outcome.reason.name, outcome.message)
        kopf.warn(body, reason=outcome.reason.name, message=outcome.message)


def _write_message(outcome: Outcome, spec: RepositoryTagSpec, was_in_sync: bool) -> tuple[str, str]:
    previous = outcome.previous_digest or "no alive tag"
    verb = "restored" if outcome.written is Action.RESTORE else "moved"
    if was_in_sync:
        message = (
            f"Drift: tag {spec.tag} of {spec.repository} pointed at {previous}, changed outside the operator; "
            f"{verb} it back to {spec.manifest_digest}."
        )
        return "DriftCorrected", message
    if outcome.written is Action.RESTORE:
        return "TagRestored", f"Restored tag {spec.tag} of {spec.repository} to {spec.manifest_digest} (was {previous})."
    return "TagMoved", f"Moved tag {spec.tag} of {spec.repository} from {previous} to {spec.manifest_digest}."


def report_tag_left(body: kopf.Body, logger: Logger, message: str) -> None:
    logger.warning(message)
    kopf.warn(body, reason="TagLeftInQuay", message=message)


def ready_reason(current: Mapping[str, Any]) -> str | None:
    for condition in current.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == status.READY:
            reason = condition.get("reason")
            return str(reason) if reason is not None else None
    return None
