"""Leader election with a coordination.k8s.io Lease, so that one replica of several reconciles.

The election follows client-go's tools/leaderelection package (Kubernetes v1.37):

- A candidate reads the Lease. When it does not exist, the candidate creates it with itself as
  ``holderIdentity``. When another identity holds it, the candidate waits until
  ``leaseDurationSeconds`` have passed since it last saw the Lease change, measured on its own
  monotonic clock, so that clock skew between nodes does not matter. Then it takes the Lease over
  and adds one to ``leaseTransitions``.
- Every write is an update of the version last read (``resourceVersion``), so when two
  candidates race, the API server accepts one write and rejects the other with 409 Conflict.
- The leader renews ``renewTime`` every retry period. When no renewal succeeds for the renew
  deadline, which is shorter than the lease duration, it stops leading before any other replica
  may take over. One difference from client-go: the leader also stops as soon as it reads another
  holder in the Lease, instead of retrying until the deadline.
- On a clean stop the leader releases the Lease: an empty ``holderIdentity`` and a lease duration of
  1 s, so that a standby takes over within one retry period instead of one lease duration.

Like client-go's, this election does not fence: a write to Quay that is already on the wire when
the leader stops may still land after another replica starts.

kopf runs its startup handler before it starts any watch, so the handler calls :func:`lead`, which
returns only once this replica holds the Lease. While it waits, kopf does not serve its liveness
endpoint yet, so :func:`standby_probe_server` serves that URL in its place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kubernetes
import urllib3
from aiohttp import web

from quay_tag_operator.config import OperatorConfig

Logger = logging.Logger | logging.LoggerAdapter[Any]

# A standby adds up to this fraction of the retry period at random to each wait for the Lease, so
# that standby replicas do not poll in step. client-go's JitterFactor is 1.2, and a smaller one
# keeps the handover after a release close to one retry period.
RETRY_JITTER = 0.2

# A standby replica logs a failure to read the Lease on the first attempt and then on every
# attempt that is a multiple of this, so that an unreachable API server does not flood the log.
FAILURE_LOG_EVERY = 10

# The Lease's managedFields name this manager for the fields that the operator writes.
FIELD_MANAGER = "quay-tag-operator"

# Seconds that the standby probe server waits for open requests when it closes, as kopf's does.
PROBE_SHUTDOWN_TIMEOUT = 1.0


class LeaseError(Exception):
    """Reading or writing the Lease failed; the message names the Lease and the cause."""


class LeaseConflictError(LeaseError):
    """The API server rejected a write because another client changed or created the Lease first."""


class LeaseNotFoundError(LeaseError):
    """The Lease does not exist (404)."""


@dataclasses.dataclass(frozen=True)
class LeaseTiming:
    """Timing of the election in seconds, where retry period < renew deadline < lease duration."""

    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                f"invalid lease timing {self}: expected 0 < retry period < renew deadline < lease duration"
            )

    @classmethod
    def from_config(cls, config: OperatorConfig) -> LeaseTiming:
        return cls(
            lease_duration=config.lease_duration_seconds,
            renew_deadline=config.renew_deadline_seconds,
            retry_period=config.retry_period_seconds,
        )


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec, with the times as the API server returns them."""

    holder_identity: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    lease_transitions: int

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LeaseRecord:
        return cls(
            holder_identity=spec.get("holderIdentity") or "",
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.lease_transitions,
        }


def micro_time(moment: datetime.datetime) -> str:
    """Format ``moment`` as a Kubernetes MicroTime: RFC 3339 in UTC with six fractional digits."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_identity() -> str:
    """Return the pod's host name with a random suffix, so that a restarted pod is a new candidate."""
    hostname = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{hostname}_{secrets.token_hex(4)}"


class LeaseClient:
    """Reads, creates and updates one Lease through the kubernetes client.

    Like client-go's LeaseLock, it keeps the Lease object from its last read or write and sends
    updates with that object's ``resourceVersion``. Calls run one at a time on a thread of their
    own, so a busy default executor (status writes, Secret reads) cannot delay a renewal. A write
    that is still running when its caller gave up also ends before the next call starts.
    """

    def __init__(self, api_client: Any, *, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self._lease: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def get(self, timeout: float) -> LeaseRecord | None:
        """Read the Lease, or return None when it does not exist."""
        try:
            lease = await self._call(self._api.read_namespaced_lease, self.name, self.namespace, timeout=timeout)
        except LeaseNotFoundError:
            self._lease = None
            return None
        self._lease = lease
        return LeaseRecord.from_spec(lease.get("spec") or {})

    async def create(self, record: LeaseRecord, timeout: float) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.to_spec(),
        }
        self._lease = await self._call(
            self._api.create_namespaced_lease, self.namespace, body, timeout=timeout, field_manager=FIELD_MANAGER
        )

    async def update(self, record: LeaseRecord, timeout: float) -> None:
        """Write ``record`` over the version of the Lease last read or written."""
        if self._lease is None:
            raise LeaseError(f"Updating {self} failed: it has not been read yet")
        body = {**self._lease, "spec": {**(self._lease.get("spec") or {}), **record.to_spec()}}
        self._lease = await self._call(
            self._api.replace_namespaced_lease,
            self.name,
            self.namespace,
            body,
            timeout=timeout,
            field_manager=FIELD_MANAGER,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, method: Callable[..., Any], *args: Any, timeout: float, **options: Any) -> dict[str, Any]:
        def request() -> dict[str, Any]:
            # The raw response keeps the times exactly as the API server formats them.
            response = method(*args, **options, _preload_content=False, _request_timeout=max(timeout, 0.1))
            body: dict[str, Any] = json.loads(response.data)
            return body

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, request)
        except kubernetes.client.ApiException as error:
            if error.status == 409:
                raise LeaseConflictError(f"{self} was changed by another client (409 Conflict)") from error
            if error.status == 404:
                raise LeaseNotFoundError(f"{self} not found") from error
            if error.status == 403:
                raise LeaseError(
                    f"Access to {self} is forbidden (403): the operator's service account needs get, create "
                    f"and update on leases (coordination.k8s.io) in namespace {self.namespace}"
                ) from error
            raise LeaseError(f"Request for {self} failed: {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LeaseError(f"Request for {self} failed: {error}") from error
        except ValueError as error:
            raise LeaseError(f"Response for {self} is not JSON: {error}") from error


class LeaderElector:
    """One candidate's view of the election: acquire, renew and release the Lease."""

    def __init__(
        self,
        leases: LeaseClient,
        *,
        identity: str,
        timing: LeaseTiming,
        logger: Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.timing = timing
        self.logger = logger
        self._clock = clock
        # The Lease as last read or written, and the monotonic time when it last changed.
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        # True once this candidate led and then stopped because it could not renew.
        self.lost = False
        self._renewer: asyncio.Task[None] | None = None

    @property
    def holder(self) -> str | None:
        """Identity that the Lease named when this candidate last read or wrote it."""
        return self._observed.holder_identity if self._observed is not None else None

    @property
    def leading(self) -> bool:
        return self.holder == self.identity and not self.lost

    def _observe(self, record: LeaseRecord) -> None:
        self._observed = record
        self._observed_at = self._clock()

    def _observed_lease_valid(self) -> bool:
        if self._observed is None:
            return False
        return self._clock() < self._observed_at + self._observed.lease_duration_seconds

    async def try_acquire_or_renew(self, timeout: float | None = None) -> bool:
        """Make one attempt to acquire or renew the Lease and return whether this candidate holds it.

        Returns False when another holder's Lease has not expired or another candidate wrote
        first. Raises LeaseError when the API server cannot be reached or rejects the request.
        """
        timeout = self.timing.renew_deadline if timeout is None else timeout
        now = micro_time(datetime.datetime.now(datetime.UTC))
        desired = LeaseRecord(
            holder_identity=self.identity,
            lease_duration_seconds=self.timing.lease_duration,
            acquire_time=now,
            renew_time=now,
            lease_transitions=0,
        )

        # The leader first writes over the version it wrote last, which saves a read per renewal.
        observed = self._observed
        if observed is not None and observed.holder_identity == self.identity and self._observed_lease_valid():
            renewal = dataclasses.replace(
                desired, acquire_time=observed.acquire_time, lease_transitions=observed.lease_transitions
            )
            try:
                await self.leases.update(renewal, timeout)
            except LeaseError as error:
                self.logger.debug("Renewing %s over the last written version failed: %s; reading it", self.leases, error)
            else:
                self._observe(renewal)
                return True

        current = await self.leases.get(timeout)
        if current is None:
            try:
                await self.leases.create(desired, timeout)
            except LeaseConflictError:
                return False
            self._observe(desired)
            return True

        if current != self._observed:
            self._observe(current)
        held_by_other = current.holder_identity not in ("", self.identity)
        if held_by_other and self._observed_lease_valid():
            return False

        if current.holder_identity == self.identity:
            record = dataclasses.replace(
                desired, acquire_time=current.acquire_time, lease_transitions=current.lease_transitions
            )
        else:
            record = dataclasses.replace(desired, lease_transitions=current.lease_transitions + 1)
        try:
            await self.leases.update(record, timeout)
        except LeaseConflictError:
            return False
        self._observe(record)
        return True

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease, trying once per retry period."""
        self.logger.info("Waiting to acquire %s as %s", self.leases, self.identity)
        failures = 0
        reported_holder: str | None = None
        while True:
            try:
                if await self.try_acquire_or_renew():
                    break
                failures = 0
            except LeaseError as error:
                failures += 1
                if failures == 1 or failures % FAILURE_LOG_EVERY == 0:
                    self.logger.warning(
                        "%s; retrying every %.1f s (attempt %d)", error, self.timing.retry_period, failures
                    )
            holder = self.holder
            if holder and holder != reported_holder:
                self.logger.info(
                    "Standing by: %s is held by %s; taking over when it is released or not renewed for %d s",
                    self.leases,
                    holder,
                    self._observed.lease_duration_seconds if self._observed else self.timing.lease_duration,
                )
                reported_holder = holder
            await asyncio.sleep(self.timing.retry_period * (1 + RETRY_JITTER * random.random()))

        self.lost = False
        transitions = self._observed.lease_transitions if self._observed else 0
        self.logger.info("Acquired %s as %s (transition %d); leading now", self.leases, self.identity, transitions)

    async def renew_until_lost(self) -> None:
        """Renew the Lease every retry period, and return once this candidate has lost it.

        Leadership is lost when no renewal succeeds within the renew deadline after the last
        successful one, or when the Lease names another holder.
        """
        last_renewal = self._observed_at
        while True:
            await asyncio.sleep(self.timing.retry_period)
            deadline = last_renewal + self.timing.renew_deadline
            remaining = deadline - self._clock()
            if remaining > 0:
                try:
                    # The request timeout bounds each call; wait_for also bounds a call that waits for the
                    # lease thread behind a hung one.
                    renewed = await asyncio.wait_for(self.try_acquire_or_renew(remaining), remaining)
                except (LeaseError, TimeoutError) as error:
                    renewed = False
                    self.logger.warning(
                        "Renewing %s failed: %s; %.1f s left before the renew deadline",
                        self.leases,
                        error or "timed out",
                        max(deadline - self._clock(), 0.0),
                    )
                if renewed:
                    last_renewal = self._observed_at
                    continue
                if self.holder in ("", self.identity) and self._clock() < deadline:
                    continue

            self.lost = True
            if self.holder not in ("", self.identity):
                self.logger.error("Lost %s: it is held by %s now", self.leases, self.holder)
            else:
                self.logger.error(
                    "Lost %s: no renewal succeeded for %.1f s (the renew deadline)",
                    self.leases,
                    self.timing.renew_deadline,
                )
            return

    def keep_leading(self, on_lost: Callable[[], Awaitable[None]]) -> None:
        """Renew the Lease in a background task, and await ``on_lost()`` once it is lost.

        Does nothing while an earlier call's task still renews.
        """
        if self._renewer is not None and not self._renewer.done():
            return

        async def renew() -> None:
            await self.renew_until_lost()
            await on_lost()

        self._renewer = asyncio.create_task(renew(), name=f"renewal of {self.leases}")

    async def stop_renewing(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and not renewer.done():
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def release(self) -> bool:
        """Give the Lease up, if this candidate holds it, and return whether it did.

        It reads the Lease first instead of trusting the last observed version, because a write
        that an earlier, cancelled call started may have completed since. Its identity is unique
        to this process, so a Lease that names it is this candidate's to release.
        """
        try:
            current = await self.leases.get(self.timing.renew_deadline)
            if current is None or current.holder_identity != self.identity:
                return False
            now = micro_time(datetime.datetime.now(datetime.UTC))
            released = LeaseRecord(
                holder_identity="",
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                lease_transitions=current.lease_transitions,
            )
            await self.leases.update(released, self.timing.renew_deadline)
        except LeaseError as error:
            self.logger.warning(
                "Releasing %s failed: %s; another replica takes over once it expires in %d s",
                self.leases,
                error,
                self.timing.lease_duration,
            )
            return False
        self._observe(released)
        self.logger.info("Released %s", self.leases)
        return True

    async def close(self) -> None:
        """Stop renewing, release the Lease if this candidate holds it, and end the lease thread."""
        await self.stop_renewing()
        await self.release()
        self.leases.close()


@contextlib.asynccontextmanager
async def standby_probe_server(endpoint: str | None, elector: LeaderElector, logger: Logger) -> AsyncIterator[None]:
    """Answer kopf's liveness URL with 200 while this replica stands by.

    kopf serves that URL only after its startup handlers return, so without this server the
    kubelet would restart a standby replica, and a rolling update with maxUnavailable 0 would
    wait for it to be ready forever. The server closes when the block ends, so that kopf can
    bind the same address. The URL is parsed as kopf 1.45 parses it: http only, host
    ``localhost`` and port 80 when absent.
    """
    if not endpoint:
        yield
        return
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        logger.error("Not serving %s while standing by: only http:// liveness URLs are supported", endpoint)
        yield
        return

    async def report_standby(request: web.Request) -> web.Response:
        return web.json_response({"leading": False, "holder": elector.holder or None})

    app = web.Application()
    app.router.add_get(parts.path or "/", report_standby)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=PROBE_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80)
        try:
            await site.start()
        except OSError as error:
            logger.error("Serving %s while standing by failed: %s; liveness probes fail until this replica leads", endpoint, error)
        else:
            logger.debug("Serving %s while standing by", endpoint)
        yield
    finally:
        await runner.cleanup()


def create_elector(config: OperatorConfig, api_client: Any, logger: Logger) -> LeaderElector:
    """Create this replica's candidate for the Lease that ``config`` names, with a new identity."""
    if config.leader_election_namespace is None:
        raise ValueError("leader election needs a namespace; OperatorConfig.from_env fills it in")
    leases = LeaseClient(api_client, namespace=config.leader_election_namespace, name=config.leader_election_id)
    return LeaderElector(leases, identity=new_identity(), timing=LeaseTiming.from_config(config), logger=logger)


async def lead(elector: LeaderElector, *, liveness_endpoint: str | None, logger: Logger) -> None:
    """Wait until ``elector`` holds the Lease, answering the liveness URL meanwhile."""
    async with standby_probe_server(liveness_endpoint, elector, logger):
        try:
            await elector.acquire()
        except asyncio.CancelledError:
            # A stop signal while standing by: kopf cancels its startup handlers and runs no clean-up
            # handler, so a Lease that the last, interrupted attempt acquired is released here.
            await asyncio.shield(elector.close())
            raise


def request_operator_stop(logger: Logger) -> None:
    """Make kopf stop as on a pod's termination, by sending SIGTERM to this process.

    kopf handles SIGTERM only when it runs in the main thread. Elsewhere, as under
    kopf.testing.KopfRunner, nothing stops it from here, and the replica stays up without
    reconciling until it is restarted.

    A stop flag passed to kopf.run would work in any thread, but kopf 1.45 leaves the task that
    waits for that flag running after a SIGTERM, which delays every exit by 5 s.
    """
    if threading.current_thread() is threading.main_thread():
        signal.raise_signal(signal.SIGTERM)
    else:
        logger.error("Cannot stop kopf outside the main thread; restart the operator so that it stands by again")
