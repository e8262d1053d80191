"""The Quay client's error mapping and paging, with responses injected through httpx transports."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from quay_tag_operator.quay import errors
from quay_tag_operator.quay.client import MAX_BODY_BYTES, MAX_CLIENTS, QuayClient, QuayClientPool, RequestRate

TOKEN = "secret-token-value"
DIGEST = "sha256:" + "a" * 64


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> QuayClient:
    pool = QuayClientPool(transport=httpx.MockTransport(handler))
    return pool.client("https://quay.example.com", TOKEN)


def quay_error(status: int, error_type: str, detail: str) -> httpx.Response:
    body = {
        "detail": detail,
        "error_message": detail,
        "error_type": error_type,
        "title": error_type,
        "type": f"https://quay.example.com/api/v1/error/{error_type}",
        "status": status,
    }
    return httpx.Response(status, json=body)


def html(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    page = f"<html><head><title>{status}</title></head><body><h1>{status} Error</h1></body></html>"
    return httpx.Response(status, text=page, headers={"Content-Type": "text/html", **(headers or {})})


async def put_with(response: httpx.Response) -> errors.QuayError:
    client = client_for(lambda request: response)
    with pytest.raises(errors.QuayError) as raised:
        await client.put_tag("quayadmin", "busybox", "test", DIGEST)
    return raised.value


@pytest.mark.parametrize(
    ("response", "expected", "temporary"),
    [
        (quay_error(400, "invalid_request", "Invalid expiration"), errors.QuayBadRequest, False),
        (httpx.Response(400, json={"message": "Invalid tag name"}), errors.QuayBadRequest, False),
        (quay_error(401, "invalid_token", "Invalid token"), errors.QuayUnauthorized, False),
        (quay_error(403, "insufficient_scope", "Unauthorized"), errors.QuayForbidden, False),
        (quay_error(404, "not_found", "Not Found"), errors.QuayNotFound, False),
        (quay_error(409, "tag_immutable", "Tag test is immutable"), errors.QuayTagImmutable, False),
        (quay_error(409, "conflict", "Conflict"), errors.QuayConflict, False),
        (httpx.Response(415, json={"message": "Unsupported Media Type"}), errors.QuayUnexpectedStatus, False),
        (html(429), errors.QuayRateLimited, True),
        (httpx.Response(500, json={"message": "Internal Server Error"}), errors.QuayServerError, True),
        (html(502), errors.QuayServerError, True),
        (
            httpx.Response(503, json={"message": "Repository is in read only or mirror mode: MIRROR"}),
            errors.QuayRepositoryReadOnly,
            False,
        ),
        (html(503), errors.QuayServerError, True),
        (html(504), errors.QuayServerError, True),
        (httpx.Response(308, text="<p>Redirecting...</p>", headers={"Location": "/x/"}), errors.QuayUnexpectedStatus, False),
    ],
)
async def test_status_maps_to_error_class(
    response: httpx.Response, expected: type[errors.QuayError], temporary: bool
) -> None:
    error = await put_with(response)
    assert type(error) is expected
    assert error.temporary is temporary
    assert error.status == response.status_code
    assert str(response.status_code) in error.message
    assert "PUT https://quay.example.com/api/v1/repository/quayadmin/busybox/tag/test" in error.message


@pytest.mark.parametrize("status", range(300, 600))
async def test_every_error_status_is_mapped(status: int) -> None:
    error = await put_with(httpx.Response(status, content=b""))
    assert isinstance(error, errors.QuayStatusError)
    assert error.status == status
    if status >= 500 and status != 503:
        assert error.temporary


async def test_error_keeps_quay_detail_and_type() -> None:
    error = await put_with(quay_error(404, "not_found", "Manifest not found"))
    assert error.error_type == "not_found"
    assert error.detail == "Manifest not found"
    assert "404 not_found: Manifest not found" in error.message


async def test_html_body_is_trimmed_to_text() -> None:
    error = await put_with(html(502))
    assert error.body_excerpt == "502 502 Error"
    assert "<" not in error.message


async def test_long_body_is_cut() -> None:
    error = await put_with(httpx.Response(500, text="x" * 5000))
    assert error.body_excerpt is not None
    assert len(error.body_excerpt) <= errors.BODY_EXCERPT_CHARS + 3


async def test_retry_after_seconds_is_kept() -> None:
    error = await put_with(html(429, {"Retry-After": "7"}))
    assert isinstance(error, errors.QuayRateLimited)
    assert error.retry_after == 7.0


def test_retry_after_http_date_is_converted() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    assert errors.parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e9"])
def test_retry_after_invalid_is_ignored(value: str | None) -> None:
    assert errors.parse_retry_after(value) is None


async def test_connection_refused_is_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = client_for(refuse)
    with pytest.raises(errors.QuayTransportError) as raised:
        await client.restore_tag("quayadmin", "busybox", "test", DIGEST)
    assert raised.value.temporary
    assert "ConnectError" in raised.value.message
    assert raised.value.__cause__ is None  # httpx errors can quote headers, so they are not chained


async def test_timeout_is_transport_error() -> None:
    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = client_for(time_out)
    with pytest.raises(errors.QuayTransportError):
        await client.delete_tag("quayadmin", "busybox", "test")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>proxy login</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(200, text='{"tags": [', headers={"Content-Type": "application/json"}),
        httpx.Response(200, json={"tags": [{"name": "test"}], "page": 1}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, content=b"\xff\xfe\x00garbage"),
    ],
)
async def test_malformed_list_body_is_reported(response: httpx.Response) -> None:
    client = client_for(lambda request: response)
    with pytest.raises(errors.QuayMalformedResponse) as raised:
        await client.list_tag_history("quayadmin", "busybox", "test")
    assert raised.value.temporary
    assert "200" in raised.value.message


async def test_token_never_appears_in_errors() -> None:
    responses = [quay_error(401, "invalid_token", "Invalid token"), html(502), httpx.Response(200, text="{")]
    for response in responses:
        client = client_for(lambda request, response=response: response)
        with pytest.raises(errors.QuayError) as raised:
            await client.list_tag_history("quayadmin", "busybox", "test")
        assert TOKEN not in str(raised.value)
        assert TOKEN not in repr(raised.value.__dict__)


async def test_requests_carry_bearer_token_and_json() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json="Updated")

    await client_for(record).put_tag("quayadmin", "busybox", "test", DIGEST)
    request = seen[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"manifest_digest": DIGEST}


def tag_row(start: int, digest: str, end: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": "test",
        "reversion": False,
        "start_ts": start,
        "manifest_digest": digest,
        "is_manifest_list": False,
        "size": 100,
        "last_modified": "Tue, 21 May 2024 20:41:09 -0000",
    }
    if end is not None:
        row["end_ts"] = end
        row["expiration"] = "Tue, 21 May 2024 20:41:09 -0000"
    return row


async def test_history_reads_every_page() -> None:
    rows = [tag_row(1000 - i, f"sha256:{i:064x}", 1001 - i if i else None) for i in range(250)]
    pages: list[int] = []

    def serve(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        limit = int(request.url.params["limit"])
        pages.append(page)
        assert request.url.params["specificTag"] == "test"
        assert request.url.params["onlyActiveTags"] == "false"
        chunk = rows[(page - 1) * limit : page * limit]
        return httpx.Response(200, json={"tags": chunk, "page": page, "has_additional": page * limit < len(rows)})

    history = await client_for(serve).list_tag_history("quayadmin", "busybox", "test")
    assert pages == [1, 2, 3]
    assert history.complete
    assert len(history.rows) == 250
    assert [row.start_ts for row in history.rows] == sorted((row.start_ts for row in history.rows), reverse=True)


async def test_history_drops_row_shifted_by_move_between_pages() -> None:
    rows = [tag_row(1000 - i, f"sha256:{i:064x}", 1001 - i if i else None) for i in range(150)]
    moved = False

    def serve(request: httpx.Request) -> httpx.Response:
        nonlocal rows, moved
        page = int(request.url.params["page"])
        if page == 2 and not moved:
            # The tag moves after page 1 was read: every row shifts down by one.
            moved = True
            rows = [tag_row(2000, "sha256:" + "f" * 64)] + rows
        chunk = rows[(page - 1) * 100 : page * 100]
        return httpx.Response(200, json={"tags": chunk, "page": page, "has_additional": page * 100 < len(rows)})

    history = await client_for(serve).list_tag_history("quayadmin", "busybox", "test")
    starts = [row.start_ts for row in history.rows]
    assert len(starts) == len(set(starts))
    assert set(range(851, 1001)) <= set(starts)


async def test_history_stops_when_caller_has_enough() -> None:
    pages: list[int] = []

    def serve(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        pages.append(page)
        return httpx.Response(200, json={"tags": [tag_row(1000 - page, DIGEST)], "page": page, "has_additional": True})

    history = await client_for(serve).list_tag_history("quayadmin", "busybox", "test", stop_when=lambda rows: True)
    assert pages == [1]
    assert not history.complete


async def test_history_ends_on_empty_page_claiming_more() -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tags": [], "page": 1, "has_additional": True})

    history = await client_for(serve).list_tag_history("quayadmin", "busybox", "test")
    assert history.rows == ()


async def test_pool_reuses_one_client_per_host() -> None:
    pool = QuayClientPool(transport=httpx.MockTransport(lambda request: httpx.Response(204)))
    first = pool.client("https://quay.example.com/", "one")
    second = pool.client("https://quay.example.com", "two")
    other = pool.client("https://quay.other.example", "one")
    assert first._http is second._http
    assert first._http is not other._http
    await pool.aclose()
    assert first._http.is_closed


async def test_certificate_mismatch_is_tls_error() -> None:
    import ssl

    def reject(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed: Hostname mismatch")
        except ssl.SSLCertVerificationError as cause:
            raise httpx.ConnectError("certificate verify failed", request=request) from cause

    with pytest.raises(errors.QuayTLSError) as raised:
        await client_for(reject).list_tag_history("quayadmin", "busybox", "test")
    assert not raised.value.temporary
    assert "certificate verification failed" in raised.value.message


async def test_history_keeps_same_second_rows_within_page() -> None:
    # Two PUTs of one digest in the same second are two rows, and both stay.
    rows = [tag_row(1000, DIGEST), tag_row(1000, DIGEST, 1000), tag_row(990, "sha256:" + "b" * 64, 1000)]

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tags": rows, "page": 1, "has_additional": False})

    history = await client_for(serve).list_tag_history("quayadmin", "busybox", "test")
    assert len(history.rows) == 3


async def test_history_drops_alive_row_ended_before_next_page() -> None:
    # With a page size of one row: the alive row of page 1 shows up ended on page 2 after a move.
    pages = {
        1: [tag_row(1000, DIGEST)],
        2: [tag_row(1000, DIGEST, 1005)],
        3: [tag_row(900, "sha256:" + "b" * 64, 1000)],
    }

    def serve(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"tags": pages[page], "page": page, "has_additional": page < 3})

    history = await client_for(serve).list_tag_history("quayadmin", "busybox", "test")
    assert [row.start_ts for row in history.rows] == [1000, 900]


async def test_page_full_of_angle_brackets_is_excerpted() -> None:
    # A tag-stripping pattern with [^>]* takes quadratic time on this body.
    error = await put_with(httpx.Response(502, text="<" * 400_000))
    assert error.body_excerpt is not None
    assert len(error.body_excerpt) <= errors.BODY_EXCERPT_CHARS + 3


@pytest.mark.parametrize(("value", "seconds"), [("0", 1.0), ("99999999999999999999", 3600.0), ("30", 30.0)])
def test_retry_after_is_bounded(value: str, seconds: float) -> None:
    assert errors.parse_retry_after(value) == seconds


async def test_proxy_ignoring_page_is_malformed() -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tags": [tag_row(1000, DIGEST)], "page": 1, "has_additional": True})

    with pytest.raises(errors.QuayMalformedResponse) as raised:
        await client_for(serve).list_tag_history("quayadmin", "busybox", "test")
    assert "page 2 requested, page 1 returned" in raised.value.message


async def test_huge_body_is_cut_off() -> None:
    huge = b"x" * (MAX_BODY_BYTES + 1)
    with pytest.raises(errors.QuayMalformedResponse) as raised:
        await client_for(lambda request: httpx.Response(500, content=huge)).list_tag_history("quayadmin", "b", "t")
    assert "larger than" in raised.value.message


@pytest.mark.parametrize("start", [-1, 10**15])
async def test_impossible_timestamps_are_malformed(start: int) -> None:
    row = tag_row(1000, DIGEST)
    row["start_ts"] = start

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tags": [row], "page": 1, "has_additional": False})

    with pytest.raises(errors.QuayMalformedResponse):
        await client_for(serve).list_tag_history("quayadmin", "busybox", "test")


async def test_pool_closes_least_recently_used_clients() -> None:
    pool = QuayClientPool(transport=httpx.MockTransport(lambda request: httpx.Response(204)))
    first = pool.client("https://quay-0.example.com", "t")
    for index in range(1, MAX_CLIENTS + 1):
        pool.client(f"https://quay-{index}.example.com", "t")
    assert len(pool._clients) == MAX_CLIENTS
    assert all("quay-0." not in key[0] for key in pool._clients)
    assert len(pool._closing) == 1
    await pool.aclose()
    assert first._http.is_closed


async def test_request_has_total_deadline() -> None:
    async def trickle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    pool = QuayClientPool(timeout=httpx.Timeout(0.1), transport=httpx.MockTransport(trickle))
    with pytest.raises(errors.QuayTransportError) as raised:
        await pool.client("https://quay.example.com", TOKEN).list_tag_history("quayadmin", "busybox", "test")
    assert "timed out after" in raised.value.message


@pytest.mark.parametrize("token", ["first-token\nsecond-token", "tök€n", "token-a token-b\r\n"])
async def test_unsendable_token_never_in_error(token: str) -> None:
    pool = QuayClientPool(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    with pytest.raises(errors.QuayError) as raised:
        await pool.client("https://quay.example.com", token).put_tag("quayadmin", "busybox", "test", DIGEST)
    for part in token.split():
        assert part not in str(raised.value)
        assert part not in repr(raised.value.__dict__)
    assert raised.value.__cause__ is None


async def test_requests_to_one_server_are_limited() -> None:
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(201, json="Updated")

    pool = QuayClientPool(transport=httpx.MockTransport(slow), max_concurrent_requests=3)
    clients = [pool.client("https://quay.example.com", f"token-{index}") for index in range(20)]
    await asyncio.gather(*(client.put_tag("quayadmin", "busybox", "test", DIGEST) for client in clients))
    assert peak == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_request_rate_allows_burst_then_waits() -> None:
    clock = FakeClock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    rate = RequestRate(2.0, 3, clock=clock, sleep=sleep)

    waits = [await rate.acquire() for _ in range(5)]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.5)
    assert waits[4] == pytest.approx(0.5)
    assert clock.now == pytest.approx(1.0)


async def test_request_rate_refills_to_burst_only() -> None:
    clock = FakeClock()
    rate = RequestRate(1.0, 2, clock=clock)
    await rate.acquire()
    await rate.acquire()
    clock.now = 100.0

    assert await rate.acquire() == 0.0
    assert await rate.acquire() == 0.0


def test_request_rate_rejects_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RequestRate(0, 1)
