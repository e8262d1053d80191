"""One pass over a RepositoryTag as kopf delivers it: validate, connect, reconcile, record.

The pass ends in exactly one of three ways: the tag is in sync (return), a retry
is due (``kopf.TemporaryError`` with the delay of the reason), or only a change
of the resource can help (``kopf.PermanentError``). Status is written once,
through the kopf patch, before the pass ends in any of them.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import pydantic

from quay_tag_operator import reasons, status
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.credentials import CredentialsError, SecretReader, resolve_connection
from quay_tag_operator.decision import Action
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.quay.client import QuayClientPool
from quay_tag_operator.reconcile import Outcome, reconcile


@dataclass
class Runtime:
    """What every pass shares, created at operator start-up and kept in kopf's memo."""

    config: OperatorConfig
    quay: QuayClientPool
    secrets: SecretReader


async def run_pass(
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    runtime: Runtime,
    retry: int,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    outcome, spec = await _reconcile_body(body, runtime)
    current: Mapping[str, Any] = body.get("status") or {}
    generation = int(body.metadata.get("generation") or 0)

    desired = status.build_status(
        outcome,
        current=current,
        generation=generation,
        now=datetime.datetime.now(datetime.UTC),
        history_limit=runtime.config.history_limit,
    )
    for key, value in status.status_patch(current, desired).items():
        patch.status[key] = value

    _report(body, outcome, spec, current, logger)

    if outcome.reason.ready:
        return
    delay = outcome.retry_delay(retry)
    if delay is None:
        raise kopf.PermanentError(outcome.message)
    raise kopf.TemporaryError(outcome.message, delay=delay)


async def _reconcile_body(body: kopf.Body, runtime: Runtime) -> tuple[Outcome, RepositoryTagSpec | None]:
    try:
        spec = RepositoryTagSpec.model_validate(dict(body.spec))
    except pydantic.ValidationError as error:
        return Outcome(reasons.INVALID_SPEC, invalid_spec_message(error)), None

    try:
        connection = await resolve_connection(spec, body.metadata.namespace or "", runtime.config, runtime.secrets)
    except CredentialsError as error:
        return Outcome(error.reason, error.message), spec

    quay = runtime.quay.client(connection.url, connection.token, verify=connection.verify)
    return await reconcile(spec, quay, token_source=connection.token_source), spec


def invalid_spec_message(error: pydantic.ValidationError) -> str:
    """Name each invalid field and the rule it breaks, without echoing the value."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in ("spec", *detail["loc"]))
        problems.append(f"{location}: {detail['msg']}")
    return "Invalid spec: " + "; ".join(problems) + ". Fix the resource; the operator waits for the change."


def _report(
    body: kopf.Body,
    outcome: Outcome,
    spec: RepositoryTagSpec | None,
    current: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    # Events and INFO logs mark transitions: a write, or a change of the Ready
    # reason. Retries with the same reason log at DEBUG and post no Event.
    if outcome.written is not None and spec is not None:
        previous = outcome.previous_digest or "no alive tag"
        if outcome.written is Action.RESTORE:
            event_reason = "TagRestored"
            message = f"Restored tag {spec.tag} of {spec.repository} to {spec.manifest_digest} (was {previous})."
        else:
            event_reason = "TagMoved"
            message = f"Moved tag {spec.tag} of {spec.repository} from {previous} to {spec.manifest_digest}."
        logger.info(message)
        kopf.info(body, reason=event_reason, message=message)

    previous_reason = _ready_reason(current)
    if previous_reason == outcome.reason.name:
        logger.debug("%s: %s", outcome.reason.name, outcome.message)
        return
    if outcome.reason.ready:
        logger.info("Ready: %s", outcome.message)
        kopf.info(body, reason=outcome.reason.name, message=outcome.message)
    else:
        logger.warning("Not ready (%s): %s", outcome.reason.name, outcome.message)
        kopf.warn(body, reason=outcome.reason.name, message=outcome.message)


def _ready_reason(current: Mapping[str, Any]) -> str | None:
    for condition in current.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == status.READY:
            reason = condition.get("reason")
            return str(reason) if reason is not None else None
    return None
