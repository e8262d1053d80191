"""One reconcile pass against Quay: gather, decide, act, re-read.

This module depends on Quay and the decision rules but not on kopf or Kubernetes: it
returns an ``Outcome`` that the status writer records and the handler turns
into Events and retries. Quay errors never escape; each becomes an outcome
whose reason carries its retry policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quay_tag_operator import reasons
from quay_tag_operator.decision import Action, decide, decide_expiration
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.quay import errors
from quay_tag_operator.quay.client import QuayClient
from quay_tag_operator.quay.models import TagHistory, TagRow

# At most one restore, one PUT and the restore fallback: each 404 removes one choice.
_MAX_WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    """Result of one pass (what it found and did), and the input of the status writer."""

    reason: reasons.Reason
    message: str
    # The tag's history as last read, or None when Quay could not be read.
    history: TagHistory | None = None
    # The write performed in this pass (PUT or RESTORE), if any.
    written: Action | None = None
    # The digest the tag pointed at before the write.
    previous_digest: str | None = None
    # A delay that Quay or its proxy asked for (Retry-After), in seconds.
    retry_after: float | None = None
    # True when this pass set the tag's expiration.
    expiration_set: bool = False

    def retry_delay(self, attempt: int) -> float | None:
        """Return seconds until the next attempt, or None when only a change of the resource helps."""
        if self.reason.retry is None:
            return None
        # Retry-After is a minimum: the reason's own backoff still grows with each attempt.
        backoff = self.reason.retry.delay(attempt)
        return max(backoff, self.retry_after) if self.retry_after is not None else backoff


async def reconcile(
    spec: RepositoryTagSpec,
    quay: QuayClient,
    *,
    token_source: str,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Bring one tag to the spec's digest with at most one write to Quay, then its expiration.

    ``token_source`` describes where the token came from, for messages that tell
    a person what to fix (it never contains the token).
    """
    namespace, name = spec.namespace_and_name
    desired = spec.manifest_digest
    expiration = int(spec.expiration.timestamp()) if spec.expiration is not None else None

    try:
        history = await quay.list_tag_history(namespace, name, spec.tag, stop_when=_contains(desired))
    except errors.QuayError as error:
        return failure_outcome(error, spec, token_source=token_source, history=None)

    if spec.suspend:
        return _suspended_outcome(spec, history, clock())
    # An expiration in the past would delete the tag again right after any write, so nothing is written.
    if expiration is not None and expiration <= clock():
        message = (
            f"spec.expiration {spec.expiration} is in the past, so the operator writes nothing to tag "
            f"{spec.tag}. Remove spec.expiration or move it into the future."
        )
        return Outcome(reasons.EXPIRATION_IN_PAST, message, history)

    rejected: set[Action] = set()
    written: Action | None = None
    previous: str | None = None
    for _ in range(_MAX_WRITE_ATTEMPTS):
        decision = decide(desired, history, now=clock(), rejected=frozenset(rejected))
        if decision.action is Action.NONE:
            break
        if decision.action is Action.WAIT:
            return Outcome(reasons.MANIFEST_NOT_FOUND, _manifest_not_found_message(spec), history)

        try:
            if decision.action is Action.PUT:
                await quay.put_tag(namespace, name, spec.tag, desired)
            else:
                await quay.restore_tag(namespace, name, spec.tag, desired)
        except errors.QuayNotFound:
            rejected.add(decision.action)
            continue
        except errors.QuayError as error:
            return failure_outcome(error, spec, token_source=token_source, history=history)

        written, previous = decision.action, decision.current_digest
        try:
            history = await _read_first_page(quay, spec)
        except errors.QuayError as error:
            outcome = failure_outcome(error, spec, token_source=token_source, history=None)
            return Outcome(outcome.reason, outcome.message, None, written, previous, outcome.retry_after)
        break
    else:
        return Outcome(reasons.MANIFEST_NOT_FOUND, _manifest_not_found_message(spec), history)

    alive = history.alive_row(clock())
    found = alive.manifest_digest if alive is not None else None
    if found != desired:
        message = (
            f"Quay accepted the {written.value if written else 'write'} of {desired} to tag {spec.tag} of "
            f"{spec.repository}, but the tag points at {found or 'nothing'} when read back. "
            "Another client may be moving this tag; the operator will not write again until the next retry."
        )
        return Outcome(reasons.WRITE_NOT_APPLIED, message, history, written, previous)

    new_expiration = decide_expiration(expiration, history, now=clock())
    if new_expiration is not None:
        try:
            await quay.set_tag_expiration(namespace, name, spec.tag, new_expiration)
            history = await _read_first_page(quay, spec)
        except errors.QuayError as error:
            outcome = failure_outcome(error, spec, token_source=token_source, history=history)
            return Outcome(outcome.reason, outcome.message, history, written, previous, outcome.retry_after)

    return Outcome(reasons.IN_SYNC, _in_sync_message(spec), history, written, previous, expiration_set=new_expiration is not None)


async def _read_first_page(quay: QuayClient, spec: RepositoryTagSpec) -> TagHistory:
    # The first page contains the alive row and every row the status shows.
    namespace, name = spec.namespace_and_name
    return await quay.list_tag_history(namespace, name, spec.tag, stop_when=lambda rows: True)


def _suspended_outcome(spec: RepositoryTagSpec, history: TagHistory, now: float) -> Outcome:
    alive = history.alive_row(now)
    found = alive.manifest_digest if alive is not None else None
    if found == spec.manifest_digest:
        message = f"Suspended: writes to Quay are off. Tag {spec.tag} points at the desired digest."
        return Outcome(reasons.SUSPENDED, message, history)
    message = (
        f"Suspended: writes to Quay are off. Tag {spec.tag} points at {found or 'nothing'}, not "
        f"{spec.manifest_digest}. Set spec.suspend to false to let the operator correct it."
    )
    return Outcome(reasons.SUSPENDED_OUT_OF_SYNC, message, history)


def failure_outcome(
    error: errors.QuayError,
    spec: RepositoryTagSpec,
    *,
    token_source: str,
    history: TagHistory | None,
) -> Outcome:
    """Map a Quay error to the Ready reason, message and retry policy that a person reads."""
    reason, advice = _reason_and_advice(error)
    if isinstance(error, errors.QuayNotFound):
        advice = f"Check that repository {spec.repository} exists and that the token can see it."
    elif isinstance(error, (errors.QuayUnauthorized, errors.QuayForbidden)):
        advice = advice.format(token_source=token_source)
    message = f"{error.message}. {advice}".strip()
    return Outcome(reason, message, history, retry_after=error.retry_after)


_REASON_AND_ADVICE: dict[type[errors.QuayError], tuple[reasons.Reason, str]] = {
    errors.QuayNotFound: (reasons.REPOSITORY_NOT_FOUND, ""),
    errors.QuayUnauthorized: (
        reasons.UNAUTHORIZED,
        "Replace the OAuth access token in {token_source} with a valid one.",
    ),
    errors.QuayForbidden: (
        reasons.FORBIDDEN,
        "Give the token's user write permission on the repository and the repo:write scope "
        "({token_source}).",
    ),
    errors.QuayTagImmutable: (
        reasons.TAG_IMMUTABLE,
        "The tag is immutable in Quay; point the resource at another tag or lift the immutability.",
    ),
    errors.QuayConflict: (reasons.REQUEST_REJECTED, "Quay reported a conflict with the tag's state."),
    errors.QuayRepositoryReadOnly: (
        reasons.REPOSITORY_READ_ONLY,
        "The repository is read-only or a mirror; the operator retries slowly until its state is NORMAL.",
    ),
    errors.QuayRateLimited: (reasons.RATE_LIMITED, "The operator backs off and retries."),
    errors.QuayServerError: (reasons.QUAY_UNAVAILABLE, "The operator retries with backoff."),
    errors.QuayTransportError: (reasons.QUAY_UNAVAILABLE, "The operator retries with backoff."),
    errors.QuayTLSError: (
        reasons.TLS_VERIFICATION_FAILED,
        "Check the Quay URL's host name and the CA bundle (--ca-bundle) that signs Quay's certificate.",
    ),
    errors.QuayMalformedResponse: (
        reasons.INVALID_RESPONSE,
        "Check the Quay URL and any proxy in front of Quay; the operator retries with backoff.",
    ),
    errors.QuayBadRequest: (reasons.REQUEST_REJECTED, "Check the resource's spec against Quay's rules."),
    errors.QuayUnexpectedStatus: (
        reasons.REQUEST_REJECTED,
        "Check that the connection URL is the root of a Quay server.",
    ),
}


def _reason_and_advice(error: errors.QuayError) -> tuple[reasons.Reason, str]:
    for error_class in type(error).__mro__:
        if error_class in _REASON_AND_ADVICE:
            return _REASON_AND_ADVICE[error_class]
    return reasons.REQUEST_REJECTED, ""


def _contains(digest: str) -> Callable[[Sequence[TagRow]], bool]:
    # Reading can stop once the desired digest shows up: the alive row is always
    # on the first page, and the decision needs nothing older than that digest.
    def check(rows: Sequence[TagRow]) -> bool:
        return any(row.manifest_digest == digest for row in rows)

    return check


def _in_sync_message(spec: RepositoryTagSpec) -> str:
    return f"Tag {spec.tag} of {spec.repository} points at {spec.manifest_digest}."


def _manifest_not_found_message(spec: RepositoryTagSpec) -> str:
    return (
        f"Manifest {spec.manifest_digest} is not in repository {spec.repository}: Quay rejected both "
        "PUT and restore with 404. Push the image, or fix the digest; the operator retries with backoff."
    )
