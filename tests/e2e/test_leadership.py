"""The Lease state machine of leadership.py against the local kube-apiserver.

Each test uses a Lease of its own in a namespace of its own. Expiry tests move a manual clock
that only the elector reads, instead of sleeping through a lease duration. Every read and write
of the Lease still goes to the real API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import kubernetes
import pytest

from quay_tag_operator.leadership import LeaderElector, LeaseClient, LeaseTiming, standby_probe_server
from quay_tag_testing.controlplane.server import ControlPlane

pytestmark = pytest.mark.controlplane

LEASE_NAME = "quay-tag-operator"
TIMING = LeaseTiming(lease_duration=4, renew_deadline=2.0, retry_period=0.5)
logger = logging.getLogger(__name__)


class ManualClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def api_client(plane: ControlPlane, host: str | None = None) -> Any:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(plane.kubeconfig_path), client_configuration=configuration)
    configuration.retries = 0
    if host is not None:
        configuration.host = host
    return kubernetes.client.ApiClient(configuration)


def read_lease(plane: ControlPlane, namespace: str, name: str = LEASE_NAME) -> dict[str, Any]:
    output = plane.kubectl("get", "lease", name, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(output)
    return result


@pytest.fixture
def electors(control_plane: ControlPlane, namespace: str) -> Iterator[Any]:
    """Return a factory of candidates for one Lease; each candidate has its own client and identity."""
    created: list[LeaderElector] = []

    def make(
        identity: str, *, clock: ManualClock | None = None, timing: LeaseTiming = TIMING, host: str | None = None
    ) -> LeaderElector:
        leases = LeaseClient(api_client(control_plane, host), namespace=namespace, name=LEASE_NAME)
        elector = LeaderElector(
            leases, identity=identity, timing=timing, logger=logger, clock=clock or time.monotonic
        )
        created.append(elector)
        return elector

    yield make
    for elector in created:
        elector.leases.close()


async def test_acquire_creates_free_lease(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    first = electors("first")

    assert await first.try_acquire_or_renew()

    spec = read_lease(control_plane, namespace)["spec"]
    assert first.leading
    assert spec["holderIdentity"] == "first"
    assert spec["leaseDurationSeconds"] == TIMING.lease_duration
    assert spec["acquireTime"] == spec["renewTime"]
    assert spec.get("leaseTransitions", 0) == 0


async def test_renewal_keeps_acquire_time(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    first = electors("first")
    assert await first.try_acquire_or_renew()
    acquired = read_lease(control_plane, namespace)["spec"]
    await asyncio.sleep(0.05)

    assert await first.try_acquire_or_renew()

    renewed = read_lease(control_plane, namespace)["spec"]
    assert renewed["acquireTime"] == acquired["acquireTime"]
    assert renewed["renewTime"] > acquired["renewTime"]
    assert renewed.get("leaseTransitions", 0) == 0


async def test_candidate_waits_while_lease_held(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    clock = ManualClock()
    first = electors("first")
    second = electors("second", clock=clock)
    assert await first.try_acquire_or_renew()
    before = read_lease(control_plane, namespace)

    assert not await second.try_acquire_or_renew()
    clock.advance(TIMING.lease_duration - 0.1)
    assert not await second.try_acquire_or_renew()

    after = read_lease(control_plane, namespace)
    assert not second.leading
    assert second.holder == "first"
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_candidate_takes_over_expired_lease(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    clock = ManualClock()
    first = electors("first")
    second = electors("second", clock=clock)
    assert await first.try_acquire_or_renew()
    first_spec = read_lease(control_plane, namespace)["spec"]
    assert not await second.try_acquire_or_renew()

    clock.advance(TIMING.lease_duration)
    assert await second.try_acquire_or_renew()

    spec = read_lease(control_plane, namespace)["spec"]
    assert second.leading
    assert spec["holderIdentity"] == "second"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] > first_spec["acquireTime"]
    assert spec["acquireTime"] == spec["renewTime"]


async def test_expiry_counts_from_last_observed_change(
    control_plane: ControlPlane, namespace: str, electors: Any
) -> None:
    """A renewal that the candidate reads restarts its wait, whatever renewTime the Lease contains."""
    clock = ManualClock()
    first = electors("first")
    second = electors("second", clock=clock)
    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()
    clock.advance(TIMING.lease_duration - 1)

    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()
    clock.advance(2)
    assert not await second.try_acquire_or_renew()
    clock.advance(TIMING.lease_duration)
    assert await second.try_acquire_or_renew()

    assert read_lease(control_plane, namespace)["spec"]["holderIdentity"] == "second"


async def test_transitions_counted_across_holders(
    control_plane: ControlPlane, namespace: str, electors: Any
) -> None:
    first = electors("first")
    second = electors("second")

    assert await first.try_acquire_or_renew()
    assert await first.release()
    assert await second.try_acquire_or_renew()
    assert await second.release()
    assert await first.try_acquire_or_renew()

    spec = read_lease(control_plane, namespace)["spec"]
    assert spec["holderIdentity"] == "first"
    assert spec["leaseTransitions"] == 2


async def test_release_frees_lease_at_once(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    clock = ManualClock()
    first = electors("first")
    second = electors("second", clock=clock)
    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()

    assert await first.release()

    spec = read_lease(control_plane, namespace)["spec"]
    assert not first.leading
    assert spec.get("holderIdentity", "") == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    # The clock has not moved: the second candidate takes the released Lease without waiting.
    assert await second.try_acquire_or_renew()
    assert read_lease(control_plane, namespace)["spec"]["leaseTransitions"] == 1


async def test_release_leaves_other_holder_alone(
    control_plane: ControlPlane, namespace: str, electors: Any
) -> None:
    first = electors("first")
    second = electors("second")
    assert await first.try_acquire_or_renew()
    before = read_lease(control_plane, namespace)

    assert not await second.release()

    assert read_lease(control_plane, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.parametrize("round_number", range(5))
async def test_racing_candidates_one_wins(
    control_plane: ControlPlane, namespace: str, electors: Any, round_number: int
) -> None:
    candidates = [electors(f"candidate-{index}") for index in range(3)]

    results = await asyncio.gather(*(candidate.try_acquire_or_renew() for candidate in candidates))

    assert sum(results) == 1, results
    winner = candidates[results.index(True)]
    assert read_lease(control_plane, namespace)["spec"]["holderIdentity"] == winner.identity
    assert [candidate.leading for candidate in candidates] == results


async def test_acquire_waits_until_release(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    first = electors("first")
    second = electors("second")
    assert await first.try_acquire_or_renew()

    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(TIMING.retry_period * 3)
    assert not waiting.done()
    assert second.holder == "first"

    released_at = time.monotonic()
    assert await first.release()
    await asyncio.wait_for(waiting, timeout=TIMING.retry_period * 3)
    handover = time.monotonic() - released_at

    assert second.leading
    # One retry period with jitter (at most 1.2 times), plus the requests.
    assert handover < TIMING.retry_period * 1.2 + 0.5, handover


async def test_renewal_loses_to_other_holder(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    first = electors("first")
    await first.acquire()
    lost = asyncio.Event()

    async def on_lost() -> None:
        lost.set()

    first.keep_leading(on_lost)
    await asyncio.sleep(TIMING.retry_period * 2)
    assert not lost.is_set()
    lease = read_lease(control_plane, namespace)
    lease["spec"]["holderIdentity"] = "intruder"
    lease["spec"]["leaseDurationSeconds"] = 60
    control_plane.kubectl("replace", "-f", "-", input=json.dumps(lease))
    overwritten_at = time.monotonic()

    await asyncio.wait_for(lost.wait(), timeout=TIMING.renew_deadline)

    # It stops at its next renewal, not at the renew deadline.
    assert time.monotonic() - overwritten_at < TIMING.retry_period + 0.5
    assert first.lost
    assert not first.leading
    assert not await first.release()
    assert read_lease(control_plane, namespace)["spec"]["holderIdentity"] == "intruder"
    await first.stop_renewing()


class TCPProxy:
    """Forward connections from a free 127.0.0.1 port to the API server, until cut() drops them all."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close the listening socket and every open connection, as a network partition would."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_writer, server_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def test_renewal_stops_at_renew_deadline(control_plane: ControlPlane, namespace: str, electors: Any) -> None:
    """With the API server unreachable, the leader gives up after the renew deadline, before the Lease expires."""
    port = int(control_plane.server_url.rsplit(":", 1)[1])
    proxy = TCPProxy(port)
    await proxy.start()
    first = electors("first", host=f"https://127.0.0.1:{proxy.port}")
    await first.acquire()
    acquired_at = time.monotonic()
    lost_at: list[float] = []

    async def on_lost() -> None:
        lost_at.append(time.monotonic())

    first.keep_leading(on_lost)
    await asyncio.sleep(TIMING.retry_period * 2)
    assert not lost_at
    await proxy.cut()
    cut_at = time.monotonic()

    await asyncio.sleep(TIMING.lease_duration)

    assert lost_at, "the leader kept leading without renewals"
    assert first.lost
    # The last renewal before the cut was at most one retry period earlier.
    assert TIMING.renew_deadline - TIMING.retry_period <= lost_at[0] - cut_at <= TIMING.renew_deadline + 0.5
    assert lost_at[0] - acquired_at < TIMING.lease_duration + TIMING.retry_period * 2
    # No candidate took over, so the Lease still names the leader, and a successor waits out its lease duration.
    assert read_lease(control_plane, namespace)["spec"]["holderIdentity"] == "first"
    await first.stop_renewing()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(endpoint: str, elector: LeaderElector) -> AsyncIterator[None]:
    async with standby_probe_server(endpoint, elector, logger):
        yield


async def test_standby_probe_server_answers_and_frees_port(electors: Any) -> None:
    first = electors("first")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/healthz"

    async with serving(endpoint, first), httpx.AsyncClient() as client:
        response = await client.get(endpoint)
        missing = await client.get(f"http://127.0.0.1:{port}/other")

    assert response.status_code == 200
    assert response.json() == {"leading": False, "holder": None}
    assert missing.status_code == 404
    # kopf binds the same address once the startup handler returns.
    with socket.socket() as rebind:
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rebind.bind(("127.0.0.1", port))
