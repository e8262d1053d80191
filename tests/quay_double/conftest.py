"""Fixtures for the Quay double's tests: a running double and HTTP clients for it.

The double serves plain HTTP, so the clients skip loading CA certificates
(``verify=False``). Loading them takes tens of milliseconds per client.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from quay_tag_testing.quay_double import QuayDouble

from .seed_data import ADMIN_TOKEN, base_seed


@pytest.fixture
def quay() -> Iterator[QuayDouble]:
    """A double started from the base seed, with its clock frozen at FROZEN_TIME."""
    with QuayDouble(base_seed()) as double:
        yield double


@pytest.fixture
def api(quay: QuayDouble) -> Iterator[httpx.Client]:
    """A client of the double's Quay API, authenticated with alice's read and write token."""
    with httpx.Client(
        base_url=quay.url + "/api/v1/repository/",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=5.0,
        verify=False,
    ) as client:
        yield client


@pytest.fixture
def admin(quay: QuayDouble) -> Iterator[httpx.Client]:
    """A client of the double's unauthenticated admin API."""
    with httpx.Client(base_url=quay.url + "/__double__/", timeout=5.0, verify=False) as client:
        yield client
