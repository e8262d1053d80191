"""Catalogue of Ready condition reasons and the retry policy of each.

Every reason the operator writes is defined here, so docs, the Argo CD health
check and tests can list them. ``retry`` is None for reasons that only a change
of the resource can clear; the operator then waits for that change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff in seconds: ``initial * 2**attempt``, at most ``maximum``."""

    initial: float
    maximum: float

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** min(attempt, 32)))


@dataclass(frozen=True)
class Reason:
    name: str
    ready: bool
    retry: Backoff | None
    # True when the condition is expected to clear by itself (Quay outage, image
    # not pushed yet); False when a person has to act.
    transient: bool


_SOON = Backoff(initial=2, maximum=300)
_SLOW = Backoff(initial=60, maximum=900)

IN_SYNC = Reason("InSync", ready=True, retry=None, transient=False)

INVALID_SPEC = Reason("InvalidSpec", ready=False, retry=None, transient=False)
MISSING_CONNECTION = Reason("MissingConnection", ready=False, retry=_SLOW, transient=False)
SECRET_NOT_FOUND = Reason("SecretNotFound", ready=False, retry=_SOON, transient=False)
SECRET_NOT_LABELED = Reason("SecretNotLabeled", ready=False, retry=_SOON, transient=False)
SECRET_KEY_NOT_FOUND = Reason("SecretKeyNotFound", ready=False, retry=_SOON, transient=False)
TOKEN_FILE_UNREADABLE = Reason("TokenFileUnreadable", ready=False, retry=_SLOW, transient=False)

MANIFEST_NOT_FOUND = Reason("ManifestNotFound", ready=False, retry=Backoff(5, 300), transient=True)
REPOSITORY_NOT_FOUND = Reason("RepositoryNotFound", ready=False, retry=_SLOW, transient=False)
UNAUTHORIZED = Reason("Unauthorized", ready=False, retry=_SLOW, transient=False)
FORBIDDEN = Reason("Forbidden", ready=False, retry=_SLOW, transient=False)
TAG_IMMUTABLE = Reason("TagImmutable", ready=False, retry=Backoff(300, 3600), transient=False)
REPOSITORY_READ_ONLY = Reason("RepositoryReadOnly", ready=False, retry=Backoff(120, 1800), transient=False)
REQUEST_REJECTED = Reason("QuayRequestRejected", ready=False, retry=_SLOW, transient=False)
RATE_LIMITED = Reason("RateLimited", ready=False, retry=Backoff(5, 300), transient=True)
QUAY_UNAVAILABLE = Reason("QuayUnavailable", ready=False, retry=_SOON, transient=True)
INVALID_RESPONSE = Reason("InvalidQuayResponse", ready=False, retry=_SOON, transient=True)
WRITE_NOT_APPLIED = Reason("WriteNotApplied", ready=False, retry=_SLOW, transient=False)
INVALID_CA_BUNDLE = Reason("InvalidCABundle", ready=False, retry=_SLOW, transient=False)
TLS_VERIFICATION_FAILED = Reason("TLSVerificationFailed", ready=False, retry=_SLOW, transient=False)
CONFLICT = Reason("Conflict", ready=False, retry=Backoff(10, 300), transient=False)
EXPIRATION_IN_PAST = Reason("ExpirationInPast", ready=False, retry=None, transient=False)
HOST_NOT_ALLOWED = Reason("HostNotAllowed", ready=False, retry=None, transient=False)
# Suspended resources keep reporting what Quay has, and Ready shows whether the tag matches.
SUSPENDED = Reason("Suspended", ready=True, retry=None, transient=False)
SUSPENDED_OUT_OF_SYNC = Reason("Suspended", ready=False, retry=None, transient=False)

ALL: tuple[Reason, ...] = (
    IN_SYNC,
    INVALID_SPEC,
    MISSING_CONNECTION,
    SECRET_NOT_FOUND,
    SECRET_NOT_LABELED,
    SECRET_KEY_NOT_FOUND,
    TOKEN_FILE_UNREADABLE,
    MANIFEST_NOT_FOUND,
    REPOSITORY_NOT_FOUND,
    UNAUTHORIZED,
    FORBIDDEN,
    TAG_IMMUTABLE,
    REPOSITORY_READ_ONLY,
    REQUEST_REJECTED,
    RATE_LIMITED,
    QUAY_UNAVAILABLE,
    INVALID_RESPONSE,
    WRITE_NOT_APPLIED,
    INVALID_CA_BUNDLE,
    TLS_VERIFICATION_FAILED,
    CONFLICT,
    EXPIRATION_IN_PAST,
    HOST_NOT_ALLOWED,
    SUSPENDED,
    SUSPENDED_OUT_OF_SYNC,
)
