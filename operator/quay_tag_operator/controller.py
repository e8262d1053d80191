"""The life of one RepositoryTag in the operator: a loop of passes.

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

from quay_tag_operator import metrics, polling, reasons, reporting, status
from quay_tag_operator.claims import Claim, ClaimKey, claim_key, conflicting_winner
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.credentials import Connection, CredentialsError, SecretReader, resolve_connection
from quay_tag_operator.models import PATTERN_RULES, RepositoryTagSpec, parse_duration
from quay_tag_operator.quay.client import QuayClient, QuayClientPool
from quay_tag_operator.reconcile import Outcome, reconcile

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
    # Periodic checks of resources in sync, shared per repository.
    pollers: polling.Pollers = field(default_factory=polling.Pollers)

    async def stop_loops(self) -> None:
        loops, self.loops = self.loops, set()
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.pollers.stop()


@dataclass(eq=False)
class TagState:
    """Per-resource state in kopf's per-object memo, for as long as the operator runs.

    Instances compare and hash by identity, so that pollers can key subscribers by them.
    """

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
    try:
        await _loop(runtime=runtime, state=state, claims=claims, logger=logger)
    finally:
        runtime.pollers.unsubscribe(state)
        metrics.forget_resource(state.reported_reason)


async def _loop(
    *,
    runtime: Runtime,
    state: TagState,
    claims: Mapping[ClaimKey, Iterable[Claim]],
    logger: Logger,
) -> None:
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
    # This pass reads the tag itself; a shared check of the old state would only wake it again.
    runtime.pollers.unsubscribe(state)

    outcome, spec, connection = await _reconcile_body(body, runtime, claims)

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
        retry = STATUS_RETRY_BACKOFF.delay(state.attempt)
        state.attempt += 1
        logger.warning("%s; the next pass is in %.0f s", error, retry)
        return retry

    previous_reason = state.reported_reason or reporting.ready_reason(current)
    metrics.PASSES.labels(reason=outcome.reason.name).inc()
    metrics.record_reason(state.reported_reason, outcome.reason.name)
    state.reported_reason = outcome.reason.name
    reporting.report(body, outcome, spec, previous_reason, was_in_sync, logger)
    delay = _next_delay(outcome, spec, state, runtime.config)
    if delay is not None and spec is not None and connection is not None:
        if _subscribe_to_shared_checks(outcome, spec, connection, delay, runtime, state):
            return None
    return delay


def _subscribe_to_shared_checks(
    outcome: Outcome,
    spec: RepositoryTagSpec,
    connection: Connection,
    interval: float,
    runtime: Runtime,
    state: TagState,
) -> bool:
    """Leave the next check of a tag in sync to its repository's poller; return False if it cannot."""
    if outcome.reason is not reasons.IN_SYNC or outcome.history is None:
        return False
    alive = outcome.history.alive_row(datetime.datetime.now(datetime.UTC).timestamp())
    if alive is None:
        return False

    namespace, name = spec.namespace_and_name
    key = polling.poll_key(_server_identity(connection), connection.token, namespace, name, interval)
    resource_namespace = state.body.metadata.namespace if state.body is not None else None

    def client() -> QuayClient:
        return runtime.quay.client(connection.url, connection.token, ca_bundle=connection.ca_bundle)

    async def credentials_current() -> bool:
        try:
            current = await resolve_connection(spec, resource_namespace or "", runtime.config, runtime.secrets)
        except CredentialsError:
            return False
        return (_server_identity(current), current.token) == (_server_identity(connection), connection.token)

    runtime.pollers.subscribe(
        state,
        key,
        polling.expectation_from(alive),
        client=client,
        wake=state.wakeup.set,
        credentials_current=credentials_current,
    )
    return True


def _server_identity(connection: Connection) -> str:
    fingerprint = connection.ca_bundle.fingerprint if connection.ca_bundle is not None else ""
    return f"{connection.url.rstrip('/')} {fingerprint}"


async def _reconcile_body(
    body: kopf.Body, runtime: Runtime, claims: Mapping[ClaimKey, Iterable[Claim]]
) -> tuple[Outcome, RepositoryTagSpec | None, Connection | None]:
    try:
        spec = RepositoryTagSpec.model_validate(dict(body.spec))
    except pydantic.ValidationError as error:
        return Outcome(reasons.INVALID_SPEC, invalid_spec_message(error)), None, None

    winner = _conflicting_claim(body, spec, runtime.config, claims)
    if winner is not None:
        message = (
            f"RepositoryTag {winner.namespace}/{winner.name} claimed tag {spec.tag} of {spec.repository} "
            f"first, with digest {winner.manifest_digest}. This resource writes nothing to Quay while that "
            "claim exists; delete one of the two or make them agree."
        )
        return Outcome(reasons.CONFLICT, message), spec, None

    try:
        connection = await resolve_connection(spec, body.metadata.namespace or "", runtime.config, runtime.secrets)
    except CredentialsError as error:
        return Outcome(error.reason, error.message), spec, None

    try:
        quay = runtime.quay.client(connection.url, connection.token, ca_bundle=connection.ca_bundle)
    except ssl.SSLError as error:
        source = connection.ca_bundle.source if connection.ca_bundle is not None else "the CA bundle"
        message = f"Loading {source} failed: {error}. It must contain PEM CA certificates."
        return Outcome(reasons.INVALID_CA_BUNDLE, message), spec, None
    return await reconcile(spec, quay, token_source=connection.token_source), spec, connection


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
    return reporting.ready_reason(current) == reasons.IN_SYNC.name
