"""Fixtures shared by the tests of the Quay client against the running double."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from quay_tag_operator.quay.client import QuayClientPool


@pytest.fixture
async def pool() -> AsyncIterator[QuayClientPool]:
    """Return a client pool with a short timeout and no rate limit, closed after the test."""
    clients = QuayClientPool(timeout=httpx.Timeout(2.0), max_requests_per_second=0)
    yield clients
    await clients.aclose()
