"""Shared periodic checks: one poller per Quay repository, token and refresh interval.

A resource whose pass ended in sync does not re-read its own tag on a timer of its
own. It subscribes to the poller of its repository instead, which reads the
repository's alive tags once per interval and wakes only the resources whose tag
no longer matches what their last pass saw. Those run a full pass, which reads
the tag's history again before any write, so a poller never causes a write by itself.

Listing a repository's alive tags costs one request per 100 tags. When the last
listing took more pages than the poller has subscribers, reading each subscribed
tag is cheaper, and the poller does that instead. When reading fails, the poller
wakes every subscriber, so that each pass reports the failure on its own resource.

Before each read, every subscriber's credentials are resolved again (its token Secret
or file and CA bundle). A subscriber whose credentials changed or can no longer be
read is woken, so a deleted or rotated Secret takes effect within one interval, as it
would if each resource read its own tag.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from quay_tag_operator import metrics
from quay_tag_operator.quay import errors
from quay_tag_operator.quay.client import QuayClient
from quay_tag_operator.quay.models import TagRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expectation:
    """The alive row of a tag as the last pass left it."""

    tag: str
    manifest_digest: str
    start_ts: int
    end_ts: int | None


def expectation_from(row: TagRow) -> Expectation:
    return Expectation(tag=row.name, manifest_digest=row.manifest_digest, start_ts=row.start_ts, end_ts=row.end_ts)


def still_matches(expected: Expectation, alive: TagRow | None) -> bool:
    """Return whether the tag's alive row is the one the last pass saw.

    A new start time means the tag was written since, even when it points at the same
    digest again, so the resource's history in status needs a new read.
    """
    if alive is None:
        return False
    return (alive.manifest_digest, alive.start_ts, alive.end_ts) == (
        expected.manifest_digest,
        expected.start_ts,
        expected.end_ts,
    )


@dataclass(frozen=True)
class PollKey:
    """Identity of one poller: a Quay server, one token's view of one repository, one interval."""

    server: str
    # SHA-256 of the token: resources with different tokens may see different things.
    token_hash: str
    namespace: str
    repository: str
    interval: float


def poll_key(server: str, token: str, namespace: str, repository: str, interval: float) -> PollKey:
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    return PollKey(server, token_hash, namespace, repository, interval)


@dataclass
class Subscription:
    expectation: Expectation
    # Starts the subscriber's next pass.
    wake: Callable[[], None]
    # Returns False when the subscriber's credentials are no longer those of the poller's key.
    credentials_current: Callable[[], Awaitable[bool]] | None = None


@dataclass
class RepositoryPoller:
    """Checks the subscribed tags of one repository every ``key.interval`` seconds."""

    key: PollKey
    # Returns a client for each check, so that a client closed by the pool is never reused.
    client: Callable[[], QuayClient]
    subscribers: dict[object, Subscription] = field(default_factory=dict)
    # Pages that the last listing of the repository took; None before the first listing.
    pages: int | None = None
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while self.subscribers:
                await asyncio.sleep(self.key.interval)
                if self.subscribers:
                    await self.check()
        except Exception:
            # Such as the API server failing while credentials are resolved: each pass reports its own error.
            logger.exception("Checking the tags of %s/%s failed unexpectedly", self.key.namespace, self.key.repository)
        finally:
            # However the poller ends, no subscriber may be left waiting for it.
            self.wake_all()

    async def check(self) -> None:
        """Read the subscribed tags once and wake the subscribers whose tag or credentials changed."""
        subscribers = await self._with_current_credentials()
        if not subscribers:
            return
        tags = {subscription.expectation.tag for subscription in subscribers.values()}
        try:
            if self.pages is not None and self.pages > len(tags):
                alive = await self._read_each(tags)
                mode = "tags"
            else:
                alive = await self._list()
                mode = "list"
        except errors.QuayError as error:
            logger.info(
                "Checking the tags of %s/%s failed, so %d resources re-read their tags: %s",
                self.key.namespace,
                self.key.repository,
                len(subscribers),
                error,
            )
            metrics.SHARED_CHECKS.labels(mode="failed").inc()
            self.wake_all()
            return

        metrics.SHARED_CHECKS.labels(mode=mode).inc()
        changed = 0
        for owner, subscription in subscribers.items():
            if not still_matches(subscription.expectation, alive.get(subscription.expectation.tag)):
                changed += 1
                self._wake(owner, subscription)
        logger.debug(
            "Checked %d tags of %s/%s by %s: %d changed",
            len(tags),
            self.key.namespace,
            self.key.repository,
            mode,
            changed,
        )

    async def _with_current_credentials(self) -> dict[object, Subscription]:
        subscribers = dict(self.subscribers)
        checks = [
            subscription.credentials_current()
            for subscription in subscribers.values()
            if subscription.credentials_current is not None
        ]
        results = iter(await asyncio.gather(*checks))
        current: dict[object, Subscription] = {}
        for owner, subscription in subscribers.items():
            if subscription.credentials_current is not None and not next(results):
                self._wake(owner, subscription)
            else:
                current[owner] = subscription
        return current

    def wake_all(self) -> None:
        for owner, subscription in list(self.subscribers.items()):
            self._wake(owner, subscription)

    def _wake(self, owner: object, subscription: Subscription) -> None:
        # Only the current subscription is removed: the owner may have subscribed again meanwhile.
        if self.subscribers.get(owner) is subscription:
            del self.subscribers[owner]
        subscription.wake()

    async def _list(self) -> Mapping[str, TagRow]:
        listing = await self.client().list_alive_tags(self.key.namespace, self.key.repository)
        self.pages = listing.pages
        return listing.rows

    async def _read_each(self, tags: set[str]) -> Mapping[str, TagRow]:
        client = self.client()
        now = time.time()
        alive: dict[str, TagRow] = {}
        for tag in sorted(tags):
            # The alive row is always on the first page of a tag's history.
            history = await client.list_tag_history(
                self.key.namespace, self.key.repository, tag, stop_when=lambda rows: True
            )
            row = history.alive_row(now)
            if row is not None:
                alive[tag] = row
        # Reading each tag reveals nothing about the listing's size, so the next check lists again
        # once the subscribers outnumber the pages the last listing took.
        return alive


class Pollers:
    """Every repository poller of the operator, and which one each resource subscribes to."""

    def __init__(self) -> None:
        self._pollers: dict[PollKey, RepositoryPoller] = {}
        self._keys: dict[object, PollKey] = {}

    def subscribe(
        self,
        owner: object,
        key: PollKey,
        expectation: Expectation,
        *,
        client: Callable[[], QuayClient],
        wake: Callable[[], None],
        credentials_current: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Have ``wake`` called once the tag no longer matches ``expectation``, or reading it fails.

        ``credentials_current`` runs before each check; when it returns False, ``wake`` is called.
        """
        self.unsubscribe(owner)
        poller = self._pollers.get(key)
        if poller is None or poller.task is None or poller.task.done():
            poller = RepositoryPoller(key=key, client=client)
            self._pollers[key] = poller
        else:
            # The newest subscriber's client carries the newest token and CA bundle of this key.
            poller.client = client
        poller.subscribers[owner] = Subscription(expectation, wake, credentials_current)
        self._keys[owner] = key
        if poller.task is None:
            poller.task = asyncio.create_task(
                poller.run(), name=f"Poller of {key.namespace}/{key.repository} every {key.interval:g} s"
            )
            poller.task.add_done_callback(lambda _: self._forget(poller))

    def unsubscribe(self, owner: object) -> None:
        key = self._keys.pop(owner, None)
        poller = self._pollers.get(key) if key is not None else None
        if poller is not None:
            poller.subscribers.pop(owner, None)

    async def stop(self) -> None:
        pollers = list(self._pollers.values())
        tasks = [poller.task for poller in pollers if poller.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def subscriber_count(self) -> int:
        return sum(len(poller.subscribers) for poller in self._pollers.values())

    def _forget(self, poller: RepositoryPoller) -> None:
        # A newer poller of the same key may exist already; its subscribers stay.
        if self._pollers.get(poller.key) is not poller:
            return
        del self._pollers[poller.key]
        for owner, key in list(self._keys.items()):
            if key == poller.key:
                del self._keys[owner]
