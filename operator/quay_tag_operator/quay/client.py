"""Async client of Quay's tag API.

``QuayClientPool`` keeps one long-lived ``httpx.AsyncClient`` per Quay base URL
and CA bundle, opened on first use and closed when the operator stops.
``QuayClient`` binds one of them to a token; it is cheap, so each reconcile
makes its own. Every failure leaves this module as a ``QuayError``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from quay_tag_operator import metrics
from quay_tag_operator.quay import errors
from quay_tag_operator.quay.models import TagHistory, TagPage, TagRow

logger = logging.getLogger(__name__)

# Quay clamps larger values to 100 (endpoints/api/tag.py).
PAGE_SIZE = 100
# A guard against a server that always reports more pages: 1,000 pages are 100,000 rows.
MAX_PAGES = 1000
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# A page of 100 rows is about 40 KB; a body far larger than that is not Quay's.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Open HTTP clients kept at most; the least recently used one is closed first.
MAX_CLIENTS = 32
# Requests in flight to one Quay server at most, across all resources. Quay's own nginx
# configuration allows a burst of 25 requests per client; this stays well below it.
DEFAULT_MAX_CONCURRENT_REQUESTS = 8
# Quay's nginx configuration (conf/nginx in quay/quay) limits /api/ to 5 requests per second
# per client address, with a burst of 25, when rate limiting is on.
DEFAULT_MAX_REQUESTS_PER_SECOND = 5.0
DEFAULT_REQUEST_BURST = 25
USER_AGENT = "quay-tag-operator"

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class CABundle:
    """PEM text of the CA certificates that sign a Quay server's certificate."""

    pem: str
    # Description of the bundle's source, for messages.
    source: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.pem.encode()).hexdigest()


class RequestRate:
    """Token bucket: ``rate`` requests per second on average, up to ``burst`` at once after a pause.

    Waiters are served in arrival order, because asyncio.Lock wakes its waiters first in, first out.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be positive and burst at least 1, not {rate} and {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait until a request may start and return the seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                pause = (1 - self._tokens) / self._rate
                await self._sleep(pause)
                waited += pause


@dataclass(frozen=True)
class AliveTags:
    """The alive row of each tag of one repository, by tag name."""

    rows: dict[str, TagRow]
    # Pages read; a later listing of the same repository costs about as many requests.
    pages: int
    # False when listing stopped at MAX_PAGES.
    complete: bool


class QuayClientPool:
    """Long-lived HTTP clients, one per Quay base URL and CA bundle."""

    def __init__(
        self,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        max_requests_per_second: float = DEFAULT_MAX_REQUESTS_PER_SECOND,
        request_burst: int = DEFAULT_REQUEST_BURST,
    ) -> None:
        self._timeout = timeout
        # Limits per Quay server, shared by every client of that server whatever its CA bundle.
        self._max_concurrent_requests = max_concurrent_requests
        self._limits: dict[str, asyncio.Semaphore] = {}
        # No rate limit when max_requests_per_second is 0.
        self._max_requests_per_second = max_requests_per_second
        self._request_burst = request_burst
        self._rates: dict[str, RequestRate] = {}
        # Maximum total time of one request, however slowly its bytes arrive.
        self._deadline = 3 * (timeout.read or DEFAULT_TIMEOUT.read or 10.0)
        self._transport = transport
        self._clients: OrderedDict[tuple[str, str], httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._retired: set[httpx.AsyncClient] = set()

    def client(self, base_url: str, token: str, *, ca_bundle: CABundle | None = None) -> QuayClient:
        """Return a client for one Quay server.

        TLS is verified against ``ca_bundle`` when given, else against the system's CAs.
        Raises ssl.SSLError when the bundle contains no usable certificate.
        """
        root = base_url.rstrip("/")
        key = (root, ca_bundle.fingerprint if ca_bundle is not None else "")
        http = self._clients.get(key)
        if http is not None:
            self._clients.move_to_end(key)
        else:
            verify: ssl.SSLContext | bool = True
            if ca_bundle is not None:
                verify = ssl.create_default_context(cadata=ca_bundle.pem)
            http = httpx.AsyncClient(
                base_url=f"{root}/api/v1/",
                timeout=self._timeout,
                verify=verify,
                transport=self._transport,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
            self._clients[key] = http
            if len(self._clients) > MAX_CLIENTS:
                _, oldest = self._clients.popitem(last=False)
                self._close_later(oldest)
        limit = self._limits.setdefault(root, asyncio.Semaphore(self._max_concurrent_requests))
        rate = self._rates.get(root)
        if rate is None and self._max_requests_per_second > 0:
            rate = self._rates[root] = RequestRate(self._max_requests_per_second, self._request_burst)
        return QuayClient(http, token, deadline=self._deadline, limit=limit, rate=rate)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, OrderedDict()
        for http in clients.values():
            await http.aclose()
        # Evicted clients still waiting to close are closed now.
        for task in list(self._closing):
            task.cancel()
        retired, self._retired = self._retired, set()
        for http in retired:
            await http.aclose()

    def _close_later(self, http: httpx.AsyncClient) -> None:
        # A pass may still be using the evicted client, so it is closed once any request has ended.
        self._retired.add(http)

        async def close() -> None:
            await asyncio.sleep(self._deadline + 1)
            self._retired.discard(http)
            await http.aclose()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class QuayClient:
    """Tag operations on one Quay server with one OAuth access token."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: str,
        *,
        deadline: float = 30.0,
        limit: asyncio.Semaphore | None = None,
        rate: RequestRate | None = None,
    ) -> None:
        self._http = http
        self._token = token
        self._deadline = deadline
        self._limit = limit or asyncio.Semaphore(DEFAULT_MAX_CONCURRENT_REQUESTS)
        self._rate = rate

    async def list_tag_history(
        self,
        namespace: str,
        repository: str,
        tag: str,
        *,
        stop_when: Callable[[Sequence[TagRow]], bool] | None = None,
    ) -> TagHistory:
        """Read every history row of one tag, newest first, page by page.

        ``stop_when`` receives the rows read so far after each page. When it returns
        True, reading stops and the history is marked incomplete. Rows that shift
        onto the next page because the tag moved while paging are dropped.
        """
        rows: list[TagRow] = []
        # End times seen for each row identity on earlier pages.
        seen: dict[tuple[str, int, str, bool], set[int | None]] = {}
        params = {"specificTag": tag, "onlyActiveTags": "false"}
        async for page in self._pages(namespace, repository, params):
            page_rows = [row for row in page.tags if row.name == tag and not _seen_before(row, seen)]
            for row in page_rows:
                seen.setdefault(row.identity, set()).add(row.end_ts)
            rows.extend(page_rows)

            if _is_last(page):
                return TagHistory(rows=_newest_first(rows), complete=True)
            if stop_when is not None and stop_when(rows):
                return TagHistory(rows=_newest_first(rows), complete=False)

        logger.warning(
            "Stopped reading the history of %s/%s:%s after %d pages", namespace, repository, tag, MAX_PAGES
        )
        return TagHistory(rows=_newest_first(rows), complete=False)

    async def list_alive_tags(self, namespace: str, repository: str) -> AliveTags:
        """Read the alive row of every tag in the repository (``onlyActiveTags=true``), page by page.

        A tag that moves while the pages are read may be missing from the result or
        listed twice. When it is listed twice, the row that started last is kept.
        """
        alive: dict[str, TagRow] = {}
        async for page in self._pages(namespace, repository, {"onlyActiveTags": "true"}):
            for row in page.tags:
                known = alive.get(row.name)
                if known is None or row.start_ts > known.start_ts:
                    alive[row.name] = row
            if _is_last(page):
                return AliveTags(rows=alive, pages=page.page, complete=True)

        logger.warning("Stopped listing the tags of %s/%s after %d pages", namespace, repository, MAX_PAGES)
        return AliveTags(rows=alive, pages=MAX_PAGES, complete=False)

    async def _pages(self, namespace: str, repository: str, params: dict[str, str]) -> AsyncIterator[TagPage]:
        """Yield the pages of one tag listing in order, until the last page or MAX_PAGES."""
        path = f"{_repository_path(namespace, repository)}/tag/"
        for page_number in range(1, MAX_PAGES + 1):
            response = await self._request(
                "GET", path, params={**params, "limit": str(PAGE_SIZE), "page": str(page_number)}
            )
            page = _parse(response, TagPage)
            if page.page != page_number:
                # A proxy that drops the query string returns page 1 every time; paging would never end.
                raise errors.malformed_response(response, f"page {page_number} requested, page {page.page} returned")
            yield page
            if _is_last(page):
                return

    async def put_tag(self, namespace: str, repository: str, tag: str, manifest_digest: str) -> None:
        """Point the tag at a manifest alive in the repository (Quay returns 404 otherwise)."""
        body = {"manifest_digest": manifest_digest}
        await self._request("PUT", _tag_path(namespace, repository, tag), json=body)

    async def set_tag_expiration(self, namespace: str, repository: str, tag: str, expiration: int | None) -> None:
        """Set the alive row's expiration (Unix seconds, in the future), or clear it with None.

        A PUT that also carries a digest would set the expiration on the row the move
        ends, so expiration always goes in a PUT of its own.
        """
        body: dict[str, Any] = {"expiration": expiration}
        await self._request("PUT", _tag_path(namespace, repository, tag), json=body)

    async def restore_tag(self, namespace: str, repository: str, tag: str, manifest_digest: str) -> None:
        """Point the tag at any manifest still stored in the repository, as a reversion row."""
        path = f"{_tag_path(namespace, repository, tag)}/restore"
        await self._request("POST", path, json={"manifest_digest": manifest_digest})

    async def delete_tag(self, namespace: str, repository: str, tag: str) -> None:
        await self._request("DELETE", _tag_path(namespace, repository, tag))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        if not is_valid_token(self._token):
            message = f"{method} {path} was not sent: the token is not one line of printable ASCII without spaces"
            raise errors.QuayBadRequest(message, method=method, url=path)
        try:
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except (UnicodeError, ValueError):
            # The message of this error quotes the header, token included, so it is not kept.
            message = f"{method} {path} was not sent: the token contains characters that an HTTP header cannot carry"
            raise errors.QuayBadRequest(message, method=method, url=path) from None
        async with self._limit:
            if self._rate is not None:
                waited = await self._rate.acquire()
                if waited:
                    metrics.RATE_LIMIT_WAIT_SECONDS.inc(waited)
            return await self._send(request, method)

    async def _send(self, request: httpx.Request, method: str) -> httpx.Response:
        started = time.monotonic()
        status = "error"
        try:
            # httpx's timeout applies to each read, so a server that trickles bytes is cut off here.
            async with asyncio.timeout(self._deadline):
                response = await self._http.send(request, stream=True)
                status = str(response.status_code)
                try:
                    await _read_limited(response)
                finally:
                    await response.aclose()
        except httpx.TransportError as error:
            raise self._redacted(errors.transport_error(request, error)) from None
        except TimeoutError:
            message = f"{method} {request.url} timed out after {self._deadline:.0f} s in total"
            raise errors.QuayTransportError(message, method=method, url=str(request.url)) from None
        except _BodyTooLarge:
            raise errors.malformed_response(response, f"body larger than {MAX_BODY_BYTES} bytes") from None
        except httpx.DecodingError:
            # Not a TransportError: a body that its Content-Encoding (gzip, deflate, ...) does not decode.
            raise errors.malformed_response(response, "body failed to decode with its Content-Encoding") from None
        finally:
            metrics.QUAY_REQUESTS.labels(method=method, status=status).inc()
            metrics.QUAY_REQUEST_SECONDS.labels(method=method).observe(time.monotonic() - started)
            if status == "429":
                metrics.RATE_LIMITED.inc()

        logger.debug("%s %s -> %d", method, request.url, response.status_code)
        if not response.is_success:
            raise errors.error_for_response(response)
        return response


    def _redacted(self, error: errors.QuayError) -> errors.QuayError:
        # httpx quotes an invalid header value in its message; the token must never leave in one.
        for form in {self._token, repr(self._token)[1:-1]}:
            if form and form in error.message:
                error.message = error.message.replace(form, "[token]")
        error.args = (error.message,)
        return error


class _BodyTooLarge(Exception):
    pass


async def _read_limited(response: httpx.Response) -> None:
    # Reads the decoded body into the response, as response.aread() does, but stops past
    # MAX_BODY_BYTES, which also caps a compressed body that expands without end.
    # NOTE: this sets httpx's private Response._content, as aread() does in httpx 0.28 and 0.29.
    chunks = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    response._content = b"".join(chunks)


def is_valid_token(token: str) -> bool:
    """Return whether an HTTP header can carry the token: printable ASCII, no spaces."""
    # Anything else (a second line, a space, a non-ASCII letter) fails inside httpx or h11,
    # whose error messages quote the header, token included.
    return bool(token) and all("!" <= character <= "~" for character in token)


def _parse(response: httpx.Response, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate_json(response.content)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "body"
        raise errors.malformed_response(response, f"{location}: {first['msg']}") from error


def _is_last(page: TagPage) -> bool:
    return not page.has_additional or not page.tags


def _seen_before(row: TagRow, seen: dict[tuple[str, int, str, bool], set[int | None]]) -> bool:
    # Rows within one page are distinct, even two PUTs of one digest in the same second. A row on a
    # later page repeats an earlier one when the tag moved between reads and pushed rows down: it
    # has the same end time, or it was the alive row then and has ended since.
    ends = seen.get(row.identity)
    return ends is not None and (row.end_ts in ends or None in ends)


def _newest_first(rows: list[TagRow]) -> tuple[TagRow, ...]:
    # Quay lists newest start first; sorting again keeps that order when rows
    # shifted between pages. The sort is stable, so equal starts keep Quay's order.
    return tuple(sorted(rows, key=lambda row: row.start_ts, reverse=True))


def _repository_path(namespace: str, repository: str) -> str:
    return f"repository/{quote(namespace, safe='')}/{quote(repository, safe='')}"


def _tag_path(namespace: str, repository: str, tag: str) -> str:
    return f"{_repository_path(namespace, repository)}/tag/{quote(tag, safe='')}"
