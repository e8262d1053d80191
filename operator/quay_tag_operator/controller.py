"""The life of one RepositoryTag in the operator: a loop of passes, and deletion.

Each resource gets one asyncio task that runs ``run_loop``: a pass, then a wait
for the next one, so passes of one resource never overlap. The wait is the
retry delay of a failure's reason, or the refresh interval once the tag is in
sync. A new generation of the resource, or a new value of its refresh
annotation, cuts it short. kopf's event handler
starts and feeds the task. A kopf daemon would be simpler, but kopf puts a
finalizer on every resource with a daemon or timer, and only resources with
deletionPolicy Delete should need the operator in order to be deleted.

A pass validates the spec, checks for a conflicting claim, resolves the
connection, reconciles with Quay and writes the status once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic

from quay_tag_operator import reasons, status
from quay_tag_operator.claims import Claim, ClaimKey, claim_key, conflicting_winner
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.credentials import CredentialsError, SecretReader, resolve_connection
from quay_tag_operator.decision import Action
from quay_tag_operator.models import PATTERN_RULES, RepositoryTagSpec, parse_duration
from quay_tag_operator.quay import errors
from quay_tag_operator.quay.client import QuayClientPool
from quay_tag_operator.reconcile import Outcome, failure_outcome, reconcile

Logger = logging.Logger | logging.LoggerAdapter[Any]

# Delay before the pass after a failed status write; the pass runs again in full.
STATUS_RETRY_BACKOFF = reasons.Backoff(initial=5, maximum=600)


# Setting or changing this annotation's value makes the operator re-check the resource now,
# as in: kubectl annotate repositorytag NAME quaytag.dev/refresh="$(date +%s)" --overwrite
REFRESH_ANNOTATION = "quaytag.dev/refresh"

# Seconds before a pass that raised an unexpected exception is tried again.
UNEXPECTED_ERROR_DELAY = 30.0


@dataclass
class Runtime:
    """Shared state of all passes, created at operator start-up and kept in kopf's memo."""

    config: OperatorConfig
    quay: QuayClientPool
    secrets: SecretReader
    status_writer: status.StatusWriter
    # Every resource's loop, so that clean-up can stop them.
    loops: set[asyncio.Task[None]] = field(default_factory=set)

    async def stop_loops(self) -> None:
        loops, self.loops = self.loops, set()
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


@dataclass
class TagState:
    """Per-resource state in kopf's per-object memo, for as long as the operator runs."""

    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The resource as last seen on the watch; each pass starts from it.
    body: kopf.Body | None = None
    generation: int | None = None
    refresh_request: str | None = None
    loop: asyncio.Task[None] | None = None
    stopping: bool = False
    # Failed passes in a row; sets the backoff.
    attempt: int = 0
    # The Ready reason last reported, so that Events mark only transitions.
    reported_reason: str | None = None


def tag_state(memo: Any) -> TagState:
    state: TagState | None = getattr(memo, "tag_state", None)
    if state is None:
        state = TagState()
        memo.tag_state = state
    return state


def observe(
    *,
    event_type: str | None,
    body: kopf.Body,
    runtime: Runtime,
    state: TagState,
    claims: Mapping[ClaimKey, Iterable[Claim]],
    logger: Logger,
) -> None:
    """Start, wake or stop the resource's loop for one watch event."""
    if event_type == "DELETED" or body.metadata.get("deletionTimestamp"):
        if state.loop is not None and not state.stopping:
            state.stopping = True
            state.wakeup.set()
        return

    state.body = body
    generation = body.metadata.get("generation")
    refresh_request = body.metadata.annotations.get(REFRESH_ANNOTATION)
    if state.loop is None:
        state.generation = generation
        state.refresh_request = refresh_request
        loop = asyncio.create_task(
            run_loop(runtime=runtime, state=state, claims=claims, logger=logger),
            name=f"RepositoryTag {body.metadata.namespace}/{body.metadata.name}",
        )
        state.loop = loop
        runtime.loops.add(loop)
        loop.add_done_callback(runtime.loops.discard)
    elif generation != state.generation or refresh_request != state.refresh_request:
        state.generation = generation
        state.refresh_request = refresh_request
        state.wakeup.set()


async def run_loop(
    *,
    runtime: Runtime,
    state: TagState,
    claims: Mapping[ClaimKey, Iterable[Claim]],
    logger: Logger,
) -> None:
    """Reconcile the resource until it is deleted or the operator stops."""
    while not state.stopping and state.body is not None:
        state.wakeup.clear()
        async with state.lock:
            try:
                delay = await run_pass(body=state.body, runtime=runtime, state=state, claims=claims, logger=logger)
            except Exception:
                # A bug must not end the resource's loop for good: report it and try again later.
                logger.exception("Pass failed unexpectedly; retrying in %.0f s", UNEXPECTED_ERROR_DELAY)
                delay = UNEXPECTED_ERROR_DELAY
        if delay is None:
            logger.debug("Next pass when the resource changes")
        else:
            logger.debug("Next pass in %.1f s", delay)
        try:
            await asyncio.wait_for(state.wakeup.wait(), timeout=delay)
        except TimeoutError:
            pass


async def run_pass(
    *,
    body: kopf.Body,
    runtime: Runtime,
    state: TagState,
    claims: Mapping[ClaimKey, Iterable[Claim]],
    logger: Logger,
) -> float | None:
    """Run one pass and return the seconds until the next, or None to wait for a change."""
    current: Mapping[str, Any] = body.get("status") or {}
    generation = int(body.metadata.get("generation") or 0)
    was_in_sync = _confirmed_in_sync(body, current)

    outcome, spec = await _reconcile_body(body, runtime, claims)

    desired = status.build_status(
        outcome,
        current=current,
        generation=generation,
        now=datetime.datetime.now(datetime.UTC),
        history_limit=runtime.config.history_limit,
    )
    try:
        await runtime.status_writer.write(
            body.metadata.namespace or "", body.metadata.name or "", status.status_patch(current, desired)
        )
    except status.StatusWriteError as error:
        delay = STATUS_RETRY_BACKOFF.delay(state.attempt)
        state.attempt += 1
        logger.warning("%s; the next pass is in %.0f s", error, delay)
        return delay

    _report(body, outcome, spec, state, was_in_sync, logger)
    return _next_delay(outcome, spec, state, runtime.config)


async def _reconcile_body(
    body: kopf.Body, runtime: Runtime, claims: Mapping[ClaimKey, Iterable[Claim]]
) -> tuple[Outcome, RepositoryTagSpec | None]:
    try:
        spec = RepositoryTagSpec.model_validate(dict(body.spec))
    except pydantic.ValidationError as error:
        return Outcome(reasons.INVALID_SPEC, invalid_spec_message(error)), None

    winner = _conflicting_claim(body, spec, runtime.config, claims)
    if winner is not None:
        message = (
            f"RepositoryTag {winner.namespace}/{winner.name} claimed tag {spec.tag} of {spec.repository} "
            f"first, with digest {winner.manifest_digest}. This resource writes nothing to Quay while that "
            "claim exists; delete one of the two or make them agree."
        )
        return Outcome(reasons.CONFLICT, message), spec

    try:
        connection = await resolve_connection(spec, body.metadata.namespace or "", runtime.config, runtime.secrets)
    except CredentialsError as error:
        return Outcome(error.reason, error.message), spec

    try:
        quay = runtime.quay.client(connection.url, connection.token, ca_bundle=connection.ca_bundle)
    except ssl.SSLError as error:
        source = connection.ca_bundle.source if connection.ca_bundle is not None else "the CA bundle"
        message = f"Loading {source} failed: {error}. It must contain PEM CA certificates."
        return Outcome(reasons.INVALID_CA_BUNDLE, message), spec
    return await reconcile(spec, quay, token_source=connection.token_source), spec


async def delete_tag(
    *,
    body: kopf.Body,
    runtime: Runtime,
    state: TagState,
    claims: Mapping[ClaimKey, Iterable[Claim]],
    logger: Logger,
) -> None:
    """Delete the tag in Quay for a resource with deletionPolicy Delete, if it still points at our digest.

    Anything else (the tag moved, Quay rejects the delete, the spec is invalid)
    leaves the tag and lets the resource go, with an Event that gives the reason.
    Only temporary Quay failures are retried, through kopf's handler retries.
    """
    try:
        spec = RepositoryTagSpec.model_validate(dict(body.spec))
    except pydantic.ValidationError as error:
        _leave_tag(body, logger, f"The tag was left in Quay because the spec is invalid: {invalid_spec_message(error)}")
        return

    key = claim_key(spec, runtime.config)
    others = [claim for claim in claims.get(key, ()) if claim.uid != body.metadata.uid] if key else []
    if others:
        holder = min(others)
        _leave_tag(
            body,
            logger,
            f"Tag {spec.tag} of {spec.repository} was left in Quay because RepositoryTag "
            f"{holder.namespace}/{holder.name} also declares it.",
        )
        return

    async with state.lock:
        try:
            connection = await resolve_connection(
                spec, body.metadata.namespace or "", runtime.config, runtime.secrets
            )
        except CredentialsError as error:
            _leave_tag(body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay: {error.message}")
            return

        try:
            quay = runtime.quay.client(connection.url, connection.token, ca_bundle=connection.ca_bundle)
        except ssl.SSLError as error:
            _leave_tag(body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay: loading the CA bundle failed: {error}")
            return
        namespace, name = spec.namespace_and_name
        try:
            history = await quay.list_tag_history(namespace, name, spec.tag, stop_when=lambda rows: True)
            alive = history.alive_row(datetime.datetime.now(datetime.UTC).timestamp())
            if alive is None:
                logger.info("Tag %s of %s has no alive row; nothing to delete", spec.tag, spec.repository)
                return
            if alive.manifest_digest != spec.manifest_digest:
                _leave_tag(
                    body,
                    logger,
                    f"Tag {spec.tag} of {spec.repository} was left in Quay because it points at "
                    f"{alive.manifest_digest}, not at {spec.manifest_digest} that this resource set.",
                )
                return
            await quay.delete_tag(namespace, name, spec.tag)
        except errors.QuayNotFound:
            logger.info("Tag %s of %s is already gone from Quay", spec.tag, spec.repository)
            return
        except errors.QuayError as error:
            if error.temporary:
                raise kopf.TemporaryError(f"Deleting the tag failed: {error.message}", delay=10) from None
            outcome = failure_outcome(error, spec, token_source=connection.token_source, history=None)
            _leave_tag(body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay: {outcome.message}")
            return

    message = f"Deleted tag {spec.tag} of {spec.repository} ({spec.manifest_digest}) because deletionPolicy is Delete."
    logger.info(message)
    kopf.info(body, reason="TagDeleted", message=message)


def invalid_spec_message(error: pydantic.ValidationError) -> str:
    """Name each invalid field and the rule it breaks, without echoing the value."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        field_path = ".".join(str(part) for part in detail["loc"])
        rule = detail["msg"]
        if detail["type"] == "string_pattern_mismatch":
            rule = PATTERN_RULES.get(field_path, rule)
        problems.append(f"spec.{field_path}: {rule}")
    return "Invalid spec: " + "; ".join(problems) + ". Fix the resource; the operator waits for the change."


def _conflicting_claim(
    body: kopf.Body,
    spec: RepositoryTagSpec,
    config: OperatorConfig,
    claims: Mapping[ClaimKey, Iterable[Claim]],
) -> Claim | None:
    key = claim_key(spec, config)
    if key is None:
        return None
    own = own_claim(body, spec)
    return conflicting_winner(own, claims.get(key, ()))


def own_claim(body: kopf.Body, spec: RepositoryTagSpec) -> Claim:
    return Claim(
        created=str(body.metadata.get("creationTimestamp") or ""),
        uid=body.metadata.uid or "",
        namespace=body.metadata.namespace or "",
        name=body.metadata.name or "",
        manifest_digest=spec.manifest_digest,
    )


def _next_delay(
    outcome: Outcome, spec: RepositoryTagSpec | None, state: TagState, config: OperatorConfig
) -> float | None:
    refresh = config.refresh_seconds
    if spec is not None and spec.refresh_interval is not None:
        refresh = parse_duration(spec.refresh_interval)
    periodic = refresh if refresh > 0 else None

    if outcome.reason.ready or outcome.reason.retry is None:
        state.attempt = 0
        if outcome.reason in (reasons.SUSPENDED_OUT_OF_SYNC, reasons.EXPIRATION_IN_PAST):
            return periodic
        return periodic if outcome.reason.ready else None

    delay = outcome.retry_delay(state.attempt)
    state.attempt += 1
    return delay


def _confirmed_in_sync(body: kopf.Body, current: Mapping[str, Any]) -> bool:
    # The last pass for this generation found the tag at the desired digest.
    if current.get("observedGeneration") != body.metadata.get("generation"):
        return False
    if current.get("currentDigest") != body.spec.get("manifestDigest"):
        return False
    return _ready_reason(current) == reasons.IN_SYNC.name


def _report(
    body: kopf.Body,
    outcome: Outcome,
    spec: RepositoryTagSpec | None,
    state: TagState,
    was_in_sync: bool,
    logger: Logger,
) -> None:
    # Events and INFO logs mark transitions: a write, or a change of the Ready
    # reason. Passes with the same reason log at DEBUG and post no Event.
    # A write that did not take effect is reported by its WriteNotApplied warning alone.
    if outcome.written is not None and spec is not None and outcome.reason is reasons.IN_SYNC:
        event_reason, message = _write_message(outcome, spec, was_in_sync)
        logger.info(message)
        kopf.info(body, reason=event_reason, message=message)
    if outcome.expiration_set and spec is not None:
        message = f"Set the expiration of tag {spec.tag} of {spec.repository} to {spec.expiration}."
        logger.info(message)
        kopf.info(body, reason="ExpirationSet", message=message)

    previous_reason = state.reported_reason or _ready_reason(body.get("status") or {})
    state.reported_reason = outcome.reason.name
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


def _leave_tag(body: kopf.Body, logger: Logger, message: str) -> None:
    logger.warning(message)
    kopf.warn(body, reason="TagLeftInQuay", message=message)


def _ready_reason(current: Mapping[str, Any]) -> str | None:
    for condition in current.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == status.READY:
            reason = condition.get("reason")
            return str(reason) if reason is not None else None
    return None
