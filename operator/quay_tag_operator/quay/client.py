"""Async client of Quay's tag API.

``QuayClientPool`` keeps one long-lived ``httpx.AsyncClient`` per Quay base URL
and CA bundle, opened on first use and closed when the operator stops.
``QuayClient`` binds one of them to a token; it is cheap, so each reconcile
makes its own. Every failure leaves this module as a ``QuayError``.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from quay_tag_operator.quay import errors
from quay_tag_operator.quay.models import TagHistory, TagPage, TagRow

logger = logging.getLogger(__name__)

# Quay clamps larger values to 100 (endpoints/api/tag.py).
PAGE_SIZE = 100
# A guard against a server that always reports more pages: 1,000 pages are 100,000 rows.
MAX_PAGES = 1000
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
USER_AGENT = "quay-tag-operator"

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class CABundle:
    """PEM text of the CA certificates that sign a Quay server's certificate."""

    pem: str
    # Where the bundle came from, for messages.
    source: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.pem.encode()).hexdigest()


class QuayClientPool:
    """Long-lived HTTP clients, one per Quay base URL and CA bundle."""

    def __init__(
        self,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._transport = transport
        self._clients: dict[tuple[str, str], httpx.AsyncClient] = {}

    def client(self, base_url: str, token: str, *, ca_bundle: CABundle | None = None) -> QuayClient:
        """Return a client for one Quay server.

        TLS is verified against ``ca_bundle`` when given, else against the system's CAs.
        Raises ssl.SSLError when the bundle holds no usable certificate.
        """
        root = base_url.rstrip("/")
        key = (root, ca_bundle.fingerprint if ca_bundle is not None else "")
        http = self._clients.get(key)
        if http is None:
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
        return QuayClient(http, token)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for http in clients.values():
            await http.aclose()


class QuayClient:
    """Tag operations on one Quay server with one OAuth access token."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self._http = http
        self._token = token

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
        path = f"{_repository_path(namespace, repository)}/tag/"
        rows: list[TagRow] = []
        # End times seen for each row identity on earlier pages.
        seen: dict[tuple[str, int, str, bool], set[int | None]] = {}
        for page_number in range(1, MAX_PAGES + 1):
            params = {
                "specificTag": tag,
                "onlyActiveTags": "false",
                "limit": str(PAGE_SIZE),
                "page": str(page_number),
            }
            response = await self._request("GET", path, params=params)
            page = _parse(response, TagPage)
            page_rows = [row for row in page.tags if row.name == tag and not _seen_before(row, seen)]
            for row in page_rows:
                seen.setdefault(row.identity, set()).add(row.end_ts)
            rows.extend(page_rows)

            if not page.has_additional or not page.tags:
                return TagHistory(rows=_newest_first(rows), complete=True)
            if stop_when is not None and stop_when(rows):
                return TagHistory(rows=_newest_first(rows), complete=False)

        logger.warning(
            "Stopped reading the history of %s/%s:%s after %d pages", namespace, repository, tag, MAX_PAGES
        )
        return TagHistory(rows=_newest_first(rows), complete=False)

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
        request = self._http.build_request(
            method,
            path,
            params=params,
            json=json,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as error:
            raise errors.transport_error(request, error) from error

        logger.debug("%s %s -> %d", method, request.url, response.status_code)
        if not response.is_success:
            raise errors.error_for_response(response)
        return response


def _parse(response: httpx.Response, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate_json(response.content)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "body"
        raise errors.malformed_response(response, f"{location}: {first['msg']}") from error


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
