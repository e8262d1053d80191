"""Fuzzing of QuayClient with responses that Quay, a proxy or a broken server could send.

Every call must either return its result or raise a QuayError subclass, whatever the status,
headers and body. httpx.MockTransport stands in for Quay in the first tests. The last test
serves raw bytes over a real TCP connection on 127.0.0.1, so that httpx's own HTTP parsing
meets lying Content-Length headers, broken chunking and junk status lines.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from quay_tag_operator.quay import errors
from quay_tag_operator.quay.client import QuayClient, QuayClientPool
from quay_tag_operator.quay.models import TagHistory

TOKEN = "fuzz-token-3f9c1d7e"
DIGEST = "sha256:" + "a" * 64
Call = Callable[[QuayClient], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "list_tag_history": lambda client: client.list_tag_history("quayadmin", "busybox", "test"),
    "put_tag": lambda client: client.put_tag("quayadmin", "busybox", "test", DIGEST),
    "restore_tag": lambda client: client.restore_tag("quayadmin", "busybox", "test", DIGEST),
    "delete_tag": lambda client: client.delete_tag("quayadmin", "busybox", "test"),
    "set_tag_expiration": lambda client: client.set_tag_expiration("quayadmin", "busybox", "test", 1_900_000_000),
}


def valid_page(page: int = 1, more: bool = False) -> bytes:
    row = {"name": "test", "reversion": False, "start_ts": 1_700_000_000, "manifest_digest": DIGEST}
    return json.dumps({"tags": [row], "page": page, "has_additional": more}).encode()


header_text = st.binary(max_size=40).filter(lambda value: b"\r" not in value and b"\n" not in value)
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [
            b"",
            b"{}",
            b"[]",
            b"null",
            b'"Updated"',
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            b'{"tags": "none", "page": 1}',
            b'{"tags": [], "page": "1", "has_additional": "yes"}',
            b'{"error_type": 5, "detail": ["x"], "message": {"a": 1}}',
            b"[" * 5000 + b"]" * 5000,
            b"9" * 5000,
            valid_page(),
            valid_page(more=True),
            gzip.compress(valid_page()),
            # Proxy pages and errors that echo the request's Authorization header.
            b"<html><pre>Authorization: Bearer " + TOKEN.encode() + b"</pre></html>",
            json.dumps({"detail": f"invalid token {TOKEN}", "error_type": TOKEN}).encode(),
            b"x" * 290 + TOKEN.encode(),
        ]
    ),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/json; charset=no-such-charset",
            b"text/html",
            b"text/plain; charset=utf-16",
            b"multipart/form-data; boundary=",
        ]
    ),
    header_text,
    st.just(b"text/html; token=" + TOKEN.encode()),
)
retry_afters = st.one_of(
    st.none(),
    st.sampled_from([b"0", b"-1", b"1.5", b"\xb2", b"\xb9\xb2", b"99999999999999999999999", b"Wed, 21 Oct 2015 07:28:00 GMT",
                     b"Mon, 99 Foo 99999 99:99:99 GMT", b"Fri, 31 Dec 9999 23:59:59 -2359"]),
    header_text,
)
content_encodings = st.one_of(st.none(), st.sampled_from([b"gzip", b"deflate", b"br", b"zstd", b"identity", b"gzip, gzip"]), header_text)
content_lengths = st.one_of(st.none(), st.sampled_from([b"0", b"-1", b"abc", b"99999999999"]), header_text)


@st.composite
def responses(draw: st.DrawFn) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = draw(st.integers(min_value=100, max_value=599) | st.sampled_from([200, 201, 204, 404, 429, 500, 503]))
    headers: list[tuple[bytes, bytes]] = []
    for name, strategy in (
        (b"Content-Type", content_types),
        (b"Retry-After", retry_afters),
        (b"Content-Encoding", content_encodings),
        (b"Content-Length", content_lengths),
    ):
        value = draw(strategy)
        if value is not None:
            headers.append((name, value))
    return status, headers, draw(bodies)


async def call_with(handler: Callable[[httpx.Request], httpx.Response], call: Call) -> Any:
    pool = QuayClientPool(transport=httpx.MockTransport(handler), timeout=httpx.Timeout(2.0), max_requests_per_second=0)
    try:
        return await call(pool.client("https://quay.example.com", TOKEN))
    finally:
        await pool.aclose()


def check_result(name: str, result: Any) -> None:
    if name == "list_tag_history":
        assert isinstance(result, TagHistory)
    else:
        assert result is None


def check_error(error: errors.QuayError) -> None:
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error.__dict__)
    assert error.message


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses())
@example(response=(429, [(b"Retry-After", b"\xb2")], b""))
@example(response=(200, [(b"Content-Encoding", b"gzip")], b"not gzip"))
@example(response=(500, [(b"Content-Type", b"application/json")], b"[" * 5000))
def test_any_response_parses_or_raises_quay_error(name: str, response: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, headers, body = response

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    try:
        result = asyncio.run(call_with(handler, CALLS[name]))
    except errors.QuayError as error:
        check_error(error)
    else:
        check_result(name, result)


@settings(max_examples=100, deadline=None)
@given(pages=st.lists(responses(), min_size=1, max_size=4))
def test_history_pages_of_any_shape_end_in_result_or_quay_error(
    pages: list[tuple[int, list[tuple[bytes, bytes]], bytes]],
) -> None:
    # Page 1 is valid and claims more; the pages after it are fuzzed.
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if page == 1:
            return httpx.Response(200, content=valid_page(1, more=True))
        status, headers, body = pages[min(page - 2, len(pages) - 1)]
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    try:
        result = asyncio.run(call_with(handler, CALLS["list_tag_history"]))
    except errors.QuayError as error:
        check_error(error)
    else:
        assert isinstance(result, TagHistory)


# Raw HTTP over TCP: the status line, headers and body are bytes that no library checked.

status_lines = st.one_of(
    st.integers(min_value=100, max_value=599).map(lambda status: b"HTTP/1.1 %d Reason" % status),
    st.sampled_from([b"HTTP/1.1 200", b"HTTP/1.0 200 OK", b"HTTP/2 200 OK", b"HTTP/1.1 999 Odd", b"HTTP/1.1 abc OK",
                     b"", b"garbage", b"HTTP/1.1 200 OK\x00"]),
    st.binary(max_size=30),
)
raw_header_lines = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Content-Type", b"Retry-After",
                                   b"Content-Encoding"]), header_text).map(lambda pair: pair[0] + b": " + pair[1]),
        st.sampled_from([b"Transfer-Encoding: chunked", b"Content-Length: 5", b"Content-Length: 100000",
                         b"Content-Length: 2, 3", b"Content-Encoding: gzip", b"no colon here", b": empty name"]),
        header_text,
    ),
    max_size=5,
)


@st.composite
def raw_responses(draw: st.DrawFn) -> bytes:
    body = draw(bodies | st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\njunk\r\n", b"5\r\nhel"]))
    lines = [draw(status_lines), *draw(raw_header_lines), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def serve_raw_once(raw: bytes, call: Call) -> Any:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = QuayClientPool(timeout=httpx.Timeout(1.0), max_requests_per_second=0)
    try:
        return await call(pool.client(f"http://127.0.0.1:{port}", TOKEN))
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("name", ["list_tag_history", "put_tag"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_responses())
@example(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n" + valid_page())
@example(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n" + valid_page())
@example(raw=b"HTTP/1.1 201 Created\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\nnot gzip")
def test_raw_response_over_tcp_parses_or_raises_quay_error(name: str, raw: bytes) -> None:
    try:
        result = asyncio.run(serve_raw_once(raw, CALLS[name]))
    except errors.QuayError as error:
        check_error(error)
    else:
        check_result(name, result)
