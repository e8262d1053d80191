"""Shared periodic checks (polling.py) against the running Quay test double."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest

from quay_tag_operator.polling import (
    Expectation,
    Pollers,
    RepositoryPoller,
    Subscription,
    poll_key,
    still_matches,
)
from quay_tag_operator.quay.client import QuayClientPool
from quay_tag_operator.quay.models import TagRow
from quay_tag_testing.quay_double.model import TagRow as DoubleTagRow
from quay_tag_testing.quay_double.runner import QuayDouble

TOKEN = "shared-checks-token"
NAMESPACE = "quayadmin"
NAME = "app"
REPOSITORY = f"{NAMESPACE}/{NAME}"
SEED = {
    "namespaces": [{"name": NAMESPACE}],
    "users": [{"name": NAMESPACE}],
    "tokens": [{"token": TOKEN, "user": NAMESPACE, "scopes": ["repo:read", "repo:write"]}],
}


def digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


A, B = digest("a"), digest("b")


def row(digest_: str = A, start: int = 100, end: int | None = None, name: str = "web") -> TagRow:
    return TagRow(name=name, start_ts=start, end_ts=end, manifest_digest=digest_)


def expectation_of(alive: DoubleTagRow) -> Expectation:
    """Return what a pass would have seen of a row that the double wrote (times in milliseconds)."""
    end_ts = alive.end_ms // 1000 if alive.end_ms is not None else None
    return Expectation(tag=alive.name, manifest_digest=alive.manifest_digest, start_ts=alive.start_ms // 1000, end_ts=end_ts)


class Waker:
    """Counts wake-ups of one subscriber."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.mark.parametrize(
    ("alive", "matches"),
    [
        (row(), True),
        (None, False),
        (row(digest_=B), False),
        # Written again with the same digest: the history in status needs a new read.
        (row(start=200), False),
        (row(end=5000), False),
    ],
)
def test_still_matches_compares_alive_row(alive: TagRow | None, matches: bool) -> None:
    expected = Expectation(tag="web", manifest_digest=A, start_ts=100, end_ts=None)
    assert still_matches(expected, alive) is matches


def test_poll_key_separates_tokens() -> None:
    first = poll_key("https://quay.example", "token-1", NAMESPACE, NAME, 60)
    second = poll_key("https://quay.example", "token-2", NAMESPACE, NAME, 60)
    assert first != second
    assert "token-1" not in repr(first)


@pytest.fixture
def quay() -> Iterator[QuayDouble]:
    with QuayDouble(SEED) as double:
        double.add_manifest(REPOSITORY, A)
        double.add_manifest(REPOSITORY, B)
        yield double


def subscribe_tags(quay: QuayDouble, poller: RepositoryPoller, count: int) -> dict[str, Waker]:
    wakers: dict[str, Waker] = {}
    for index in range(count):
        tag = f"tag-{index}"
        alive = quay.move_tag(REPOSITORY, tag, A)
        waker = Waker()
        poller.subscribers[tag] = Subscription(expectation_of(alive), waker)
        wakers[tag] = waker
    return wakers


def tag_reads(quay: QuayDouble) -> list[dict[str, str]]:
    return [record.query for record in quay.requests() if record.method == "GET"]


async def test_check_lists_repository_once(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(key=poll_key(quay.url, TOKEN, NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, TOKEN))
    wakers = subscribe_tags(quay, poller, 150)
    quay.reset_requests()

    await poller.check()

    reads = tag_reads(quay)
    assert len(reads) == 2, "150 alive tags fit in two pages of 100"
    assert all(read["onlyActiveTags"] == "true" for read in reads)
    assert poller.pages == 2
    assert sum(waker.count for waker in wakers.values()) == 0
    assert len(poller.subscribers) == 150


async def test_check_wakes_only_moved_tags(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(key=poll_key(quay.url, TOKEN, NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, TOKEN))
    wakers = subscribe_tags(quay, poller, 20)
    # Quay's start times are in seconds: a write in the same second would look unchanged.
    quay.advance_clock(2)
    quay.move_tag(REPOSITORY, "tag-3", B)
    quay.move_tag(REPOSITORY, "tag-7", B)
    quay.move_tag(REPOSITORY, "tag-7", A)
    quay.move_tag(REPOSITORY, "unrelated", B)

    await poller.check()

    woken = sorted(tag for tag, waker in wakers.items() if waker.count)
    assert woken == ["tag-3", "tag-7"]
    assert "tag-3" not in poller.subscribers
    assert len(poller.subscribers) == 18


async def test_check_reads_each_tag_when_cheaper(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(key=poll_key(quay.url, TOKEN, NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, TOKEN))
    for index in range(250):
        quay.move_tag(REPOSITORY, f"other-{index}", B)
    wakers = subscribe_tags(quay, poller, 2)
    await poller.check()
    assert poller.pages == 3
    quay.reset_requests()
    quay.advance_clock(2)
    quay.move_tag(REPOSITORY, "tag-1", B)

    await poller.check()

    reads = tag_reads(quay)
    assert sorted(read.get("specificTag", "") for read in reads) == ["tag-0", "tag-1"]
    assert wakers["tag-0"].count == 0
    assert wakers["tag-1"].count == 1


async def test_check_failure_wakes_everyone(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(key=poll_key(quay.url, TOKEN, NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, TOKEN))
    wakers = subscribe_tags(quay, poller, 5)
    quay.add_fault(method="GET", path="/tag/$", status=429, body="<html>Too Many Requests</html>")

    await poller.check()

    assert all(waker.count == 1 for waker in wakers.values())
    assert poller.subscribers == {}


async def test_check_with_wrong_token_wakes_everyone(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(
        key=poll_key(quay.url, "revoked", NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, "revoked")
    )
    wakers = subscribe_tags(quay, poller, 3)

    await poller.check()

    assert all(waker.count == 1 for waker in wakers.values())


async def test_pollers_share_one_poller_per_key(quay: QuayDouble, pool: QuayClientPool) -> None:
    pollers = Pollers()
    key = poll_key(quay.url, TOKEN, NAMESPACE, NAME, 0.2)
    wakers = []
    for index in range(30):
        alive = quay.move_tag(REPOSITORY, f"tag-{index}", A)
        waker = Waker()
        wakers.append(waker)
        pollers.subscribe(object(), key, expectation_of(alive), client=lambda: pool.client(quay.url, TOKEN), wake=waker)
    assert pollers.subscriber_count == 30
    quay.reset_requests()

    await asyncio.sleep(0.7)

    reads = tag_reads(quay)
    assert 2 <= len(reads) <= 4, "one listing of one page per 0.2 s interval"
    assert sum(waker.count for waker in wakers) == 0
    await pollers.stop()
    assert all(waker.count == 1 for waker in wakers), "stopping wakes every subscriber"


async def test_pollers_resubscribe_moves_owner(quay: QuayDouble, pool: QuayClientPool) -> None:
    pollers = Pollers()
    owner = object()
    alive = quay.move_tag(REPOSITORY, "web", A)
    first_waker, second_waker = Waker(), Waker()
    client = lambda: pool.client(quay.url, TOKEN)  # noqa: E731
    pollers.subscribe(owner, poll_key(quay.url, TOKEN, NAMESPACE, NAME, 0.1), expectation_of(alive), client=client, wake=first_waker)
    pollers.subscribe(owner, poll_key(quay.url, TOKEN, NAMESPACE, NAME, 0.2), expectation_of(alive), client=client, wake=second_waker)
    assert pollers.subscriber_count == 1
    quay.advance_clock(2)
    quay.move_tag(REPOSITORY, "web", B)

    await asyncio.sleep(0.5)

    assert first_waker.count == 0
    assert second_waker.count == 1
    pollers.unsubscribe(owner)
    assert pollers.subscriber_count == 0
    await pollers.stop()


async def test_poller_ends_without_subscribers(quay: QuayDouble, pool: QuayClientPool) -> None:
    pollers = Pollers()
    owner = object()
    alive = quay.move_tag(REPOSITORY, "web", A)
    pollers.subscribe(
        owner, poll_key(quay.url, TOKEN, NAMESPACE, NAME, 0.1), expectation_of(alive),
        client=lambda: pool.client(quay.url, TOKEN), wake=Waker(),
    )
    pollers.unsubscribe(owner)
    await asyncio.sleep(0.3)
    quay.reset_requests()

    await asyncio.sleep(0.3)

    assert tag_reads(quay) == []
    assert pollers.subscriber_count == 0


async def test_changed_credentials_wake_subscriber(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(key=poll_key(quay.url, TOKEN, NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, TOKEN))
    wakers = subscribe_tags(quay, poller, 3)
    results = {"tag-0": True, "tag-1": False, "tag-2": True}
    for tag, subscription in poller.subscribers.items():

        async def current(tag: object = tag) -> bool:
            return results[str(tag)]

        subscription.credentials_current = current
    quay.reset_requests()

    await poller.check()

    assert [tag for tag, waker in wakers.items() if waker.count] == ["tag-1"]
    assert len(tag_reads(quay)) == 1


async def test_all_credentials_changed_reads_nothing(quay: QuayDouble, pool: QuayClientPool) -> None:
    poller = RepositoryPoller(key=poll_key(quay.url, TOKEN, NAMESPACE, NAME, 60), client=lambda: pool.client(quay.url, TOKEN))
    wakers = subscribe_tags(quay, poller, 2)

    async def revoked() -> bool:
        return False

    for subscription in poller.subscribers.values():
        subscription.credentials_current = revoked
    quay.reset_requests()

    await poller.check()

    assert all(waker.count == 1 for waker in wakers.values())
    assert tag_reads(quay) == []
