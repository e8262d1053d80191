"""Errors of the Quay client, and the one place that maps HTTP responses to them.

Each class states whether retrying can help (``temporary``) so that callers decide
retry or give up from the class alone. Messages name the method, URL, status,
Quay's ``error_type`` and a trimmed body, never request headers. The client
also refuses tokens that httpx could quote in an error, and redacts its token
from transport errors (tests/unit/test_quay_client.py checks both).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import ssl
from typing import ClassVar

import httpx

BODY_EXCERPT_CHARS = 300
# Only the start of a body is searched for text, however large the body.
_EXCERPT_SOURCE_CHARS = 20_000
_TAG = re.compile(r"<[^<>]*>")
# Bounds on a Retry-After delay, in seconds: at least 1 so that "0" cannot make a hot
# loop, at most an hour so that a huge value cannot stop retries for good.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 3600.0

# Quay's own message for a write to a repository in READ_ONLY or MIRROR state
# (endpoints/api/__init__.py, disallow_for_non_normal_repositories).
_READ_ONLY_MESSAGE = re.compile(r"read only or mirror mode", re.IGNORECASE)


class QuayError(Exception):
    """A request to Quay failed."""

    temporary: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        error_type: str | None = None,
        detail: str | None = None,
        body_excerpt: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.error_type = error_type
        self.detail = detail
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after


class QuayTransportError(QuayError):
    """No HTTP response: connection refused or reset, DNS failure, or a timeout."""

    temporary = True


class QuayTLSError(QuayError):
    """Quay's TLS certificate failed verification: a wrong CA bundle, host name or an expired certificate."""


class QuayMalformedResponse(QuayError):
    """A success status whose body is not the JSON that Quay sends (often a proxy page)."""

    temporary = True


class QuayStatusError(QuayError):
    """Quay, or a proxy in front of it, returned an error status."""


class QuayBadRequest(QuayStatusError):
    """400: Quay rejected the request (invalid tag name, expiration or query argument)."""


class QuayUnauthorized(QuayStatusError):
    """401: the token is missing, invalid or expired."""


class QuayForbidden(QuayStatusError):
    """403: a known identity without permission, or a namespace it cannot see."""


class QuayNotFound(QuayStatusError):
    """404: no such repository, manifest or alive tag."""


class QuayConflict(QuayStatusError):
    """409: the write conflicts with the tag's state."""


class QuayTagImmutable(QuayConflict):
    """409 ``tag_immutable``: Quay refuses every write to an immutable tag."""


class QuayRateLimited(QuayStatusError):
    """429: a rate limit in front of Quay; ``retry_after`` is set when the proxy sent one."""

    temporary = True


class QuayRepositoryReadOnly(QuayStatusError):
    """503 from a repository in read-only or mirror state: retrying does not help."""


class QuayServerError(QuayStatusError):
    """5xx: Quay or its proxy is failing or unavailable."""

    temporary = True


class QuayUnexpectedStatus(QuayStatusError):
    """A status the tag API does not document (a redirect, 405, 415 and the like)."""


_CLASS_BY_STATUS: dict[int, type[QuayStatusError]] = {
    400: QuayBadRequest,
    401: QuayUnauthorized,
    403: QuayForbidden,
    404: QuayNotFound,
    409: QuayConflict,
    429: QuayRateLimited,
}


def error_for_response(response: httpx.Response) -> QuayStatusError:
    """Build the error for a response whose status is not the expected success."""
    request = response.request
    status = response.status_code
    payload = _json_object(response)
    token = _request_token(response)
    error_type = _text_field(payload, "error_type", token=token)
    detail = _text_field(payload, "detail", "error_message", "message", token=token)
    excerpt = body_excerpt(response)

    error_class = _CLASS_BY_STATUS.get(status)
    if error_class is None:
        if status == 503 and detail is not None and _READ_ONLY_MESSAGE.search(detail):
            error_class = QuayRepositoryReadOnly
        elif status >= 500:
            error_class = QuayServerError
        else:
            error_class = QuayUnexpectedStatus
    if error_class is QuayConflict and error_type == "tag_immutable":
        error_class = QuayTagImmutable

    reason = detail if detail is not None else (excerpt or "empty body")
    label = f"{status} {error_type}" if error_type else str(status)
    message = _without_token(f"{request.method} {_safe_url(request.url)} returned {label}: {reason}", token)
    return error_class(
        message,
        method=request.method,
        url=_safe_url(request.url),
        status=status,
        error_type=error_type,
        detail=detail,
        body_excerpt=excerpt,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def malformed_response(response: httpx.Response, problem: str) -> QuayMalformedResponse:
    request = response.request
    excerpt = body_excerpt(response)
    content_type = response.headers.get("Content-Type", "no Content-Type")
    message = _without_token(
        f"{request.method} {_safe_url(request.url)} returned {response.status_code} "
        f"with a body that is not Quay's JSON ({problem}; {content_type}): {excerpt or 'empty body'}",
        _request_token(response),
    )
    return QuayMalformedResponse(
        message,
        method=request.method,
        url=_safe_url(request.url),
        status=response.status_code,
        body_excerpt=excerpt,
    )


def transport_error(request: httpx.Request, error: httpx.TransportError) -> QuayTransportError | QuayTLSError:
    kind = type(error).__name__
    text = str(error) or kind
    url = _safe_url(request.url)
    verification = _certificate_error(error)
    if verification is not None:
        message = f"{request.method} {url} failed: TLS certificate verification failed: {verification}"
        return QuayTLSError(message, method=request.method, url=url)
    if isinstance(error, httpx.LocalProtocolError):
        # httpx quotes the offending header, which may be the Authorization header.
        text = "the request could not be encoded (a header value an HTTP request cannot carry)"
    message = f"{request.method} {url} failed: {kind}: {text}"
    return QuayTransportError(message, method=request.method, url=url)


def _certificate_error(error: BaseException) -> str | None:
    # httpx wraps ssl.SSLCertVerificationError in ConnectError; look down the cause chain.
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(getattr(current, "verify_message", None) or current)
        current = current.__cause__ or current.__context__
    return None


def parse_retry_after(value: str | None, *, now: datetime.datetime | None = None) -> float | None:
    """Parse a Retry-After header (delay in seconds, or an HTTP date) into seconds from now.

    The result is kept between MIN_RETRY_AFTER and MAX_RETRY_AFTER.
    """
    if value is None:
        return None
    value = value.strip()
    # isdigit alone also takes "²", which float() rejects.
    if value.isascii() and value.isdigit():
        return _bounded(float(value))
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    current = now or datetime.datetime.now(datetime.UTC)
    return _bounded((moment - current).total_seconds())


def _bounded(seconds: float) -> float:
    return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, seconds))


def body_excerpt(response: httpx.Response) -> str:
    """Return the start of the body with HTML tags removed and white space folded."""
    try:
        text = response.text[:_EXCERPT_SOURCE_CHARS]
    # UnicodeError, not only UnicodeDecodeError: the utf-16 codec raises it for a body without a BOM.
    except (UnicodeError, LookupError, httpx.ResponseNotRead):
        return ""
    # Removed before the cut, so that no part of the token stays in the excerpt either.
    text = _without_token(text, _request_token(response))
    # [^<>] keeps the substitution linear: with [^>] a page full of "<" takes quadratic time.
    text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > BODY_EXCERPT_CHARS:
        text = text[:BODY_EXCERPT_CHARS] + "..."
    return text


def _json_object(response: httpx.Response) -> dict[str, object] | None:
    try:
        payload = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a body of deeply nested arrays, such as "[[[[...", which is not Quay's.
        return None
    return payload if isinstance(payload, dict) else None


def _text_field(payload: dict[str, object] | None, *keys: str, token: str | None) -> str | None:
    if payload is None:
        return None
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return _without_token(value.strip(), token)[:BODY_EXCERPT_CHARS]
    return None


def _request_token(response: httpx.Response) -> str | None:
    """Return the credentials that the request sent in its Authorization header, if any."""
    try:
        authorization = response.request.headers.get("Authorization", "")
    except RuntimeError:
        # A response built without a request.
        return None
    _, _, credentials = authorization.partition(" ")
    return credentials.strip() or None


def _without_token(text: str, token: str | None) -> str:
    # A proxy's error page may echo the request's headers; the token must never reach a message.
    return text.replace(token, "[token]") if token else text


def _safe_url(url: httpx.URL) -> str:
    # User information in a URL would be a credential; drop it from every message.
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)
