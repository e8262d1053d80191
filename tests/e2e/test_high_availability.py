"""Two replicas of the operator with leader election, as real processes, against the local control plane.

Each test starts ``python -m quay_tag_operator --leader-election`` twice, as a Deployment with two
replicas would, watching the test's namespace and holding a Lease there. The replicas share one
Quay double, so the double's request log shows every write either of them makes.

The Lease timing is shorter than the defaults (15 s, 10 s, 2 s), so that the tests take seconds:
a lease duration of 6 s, a renew deadline of 4 s and a retry period of 1 s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest

from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import QUAY_NAMESPACE, TOKEN
from .kube import Cluster, digest, ready_with

pytestmark = pytest.mark.controlplane

LEASE_NAME = "quay-tag-operator"
LEASE_DURATION = 6
RENEW_DEADLINE = 4.0
RETRY_PERIOD = 1.0
# Standby replicas wait up to 1.2 retry periods between attempts (leadership.RETRY_JITTER).
RETRY_WITH_JITTER = RETRY_PERIOD * 1.2

# From SIGTERM of the leader until the Lease names the standby. The leader stops kopf's watches and
# its loops and releases the Lease. The standby acquires it at its next attempt, at most one
# jittered retry period (1.2 s) later. Measured with this file on 2 shared cores (load average 3
# to 5): 0.2 to 1.2 s.
TAKEOVER_BOUND = 5.0
# From SIGTERM of the leader until a RepositoryTag created at that moment is Ready: the takeover,
# then kopf's start-up in the new leader (its first list and watch), then one pass.
# Measured on the same machine: 0.7 to 1.9 s.
RECONCILE_GAP_BOUND = 8.0
# Slack for process start-up, polling and a loaded machine, on top of the Lease timing.
SLACK = 2.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Replica:
    """One operator process: its command line, log file and liveness URL."""

    def __init__(self, name: str, namespace: str, quay: QuayDouble, token_file: Path, log_dir: Path) -> None:
        self.name = name
        self.namespace = namespace
        self.log_path = log_dir / f"{name}.log"
        self.liveness_url = f"http://127.0.0.1:{free_port()}/healthz"
        self.command = [
            sys.executable,
            "-m",
            "quay_tag_operator",
            "--leader-election",
            "--leader-election-namespace",
            namespace,
            "--leader-election-lease-duration",
            f"{LEASE_DURATION}s",
            "--leader-election-renew-deadline",
            f"{RENEW_DEADLINE}s",
            "--leader-election-retry-period",
            f"{RETRY_PERIOD}s",
            "--liveness",
            self.liveness_url,
            "--namespace",
            namespace,
            "--verbose",
        ]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("QUAY_TAG_OPERATOR_")}
        environment |= {
            "HOSTNAME": name,
            "QUAY_TAG_OPERATOR_QUAY_URL": quay.url,
            "QUAY_TAG_OPERATOR_TOKEN_FILE": str(token_file),
            "PYTHONUNBUFFERED": "1",
        }
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def identity(self) -> str:
        """The replica's holderIdentity, from its first log line about the Lease."""
        found = wait_until(
            f"{self.name} to log its identity",
            lambda: re.search(r"Waiting to acquire Lease \S+ as (\S+)", self.output),
            describe=lambda: self.output,
        )
        return found.group(1)

    def send(self, sig: signal.Signals) -> float:
        assert self.process is not None
        self.process.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def probe(self) -> httpx.Response | None:
        """GET the liveness URL as the kubelet's probes do, or return None when no server responds."""
        try:
            return httpx.get(self.liveness_url, timeout=1.0)
        except httpx.TransportError:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_until(
    description: str,
    check: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Call ``check`` until it returns a true value, and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            details = describe() if describe is not None else ""
            pytest.fail(f"Timed out after {timeout} s waiting for {description}\n{details}")
        time.sleep(interval)


def lease_holder(leases: Any, namespace: str) -> str | None:
    """Return the Lease's holderIdentity, or None when the Lease is missing or released."""
    try:
        lease = leases.read_namespaced_lease(LEASE_NAME, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    holder: str | None = lease.spec.holder_identity or None
    return holder


def tag_puts(quay: QuayDouble, repository: str, tag: str) -> int:
    """Count PUTs that move ``tag`` of ``repository``: the writes of a pass that moves the tag."""
    path = f"/api/v1/repository/{repository}/tag/{tag}"
    return sum(1 for record in quay.requests() if record.method == "PUT" and record.path == path)


class Fixture:
    """The replicas, the cluster helpers and the Quay double of one test."""

    def __init__(self, plane: ControlPlane, namespace: str, quay: QuayDouble, workdir: Path) -> None:
        self.plane = plane
        self.namespace = namespace
        self.quay = quay
        self.cluster = Cluster(plane, namespace)
        self.workdir = workdir
        self.token_file = workdir / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.replicas: list[Replica] = []
        # A client instead of kubectl, because tests poll the Lease every 50 ms.
        self.leases = kubernetes.client.CoordinationV1Api(
            kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        )

    def replica(self, name: str) -> Replica:
        replica = Replica(name, self.namespace, self.quay, self.token_file, self.workdir).start()
        self.replicas.append(replica)
        return replica

    def holder(self) -> str | None:
        return lease_holder(self.leases, self.namespace)

    def overwrite_lease(self, holder: str, lease_duration: int) -> float:
        """Write another holder into the Lease, as a client that ignores the election would, and return when."""
        while True:
            lease = self.leases.read_namespaced_lease(LEASE_NAME, self.namespace)
            lease.spec.holder_identity = holder
            lease.spec.lease_duration_seconds = lease_duration
            try:
                self.leases.replace_namespaced_lease(LEASE_NAME, self.namespace, lease)
            except kubernetes.client.ApiException as error:
                # The leader renewed in between; read its renewal and write again.
                if error.status != 409:
                    raise
                continue
            return time.monotonic()

    def wait_leading(self, replica: Replica, timeout: float = 30.0) -> float:
        """Wait until the Lease names ``replica`` and return the time it was seen."""
        identity = replica.identity
        wait_until(f"{replica.name} to hold the Lease", lambda: self.holder() == identity, timeout=timeout,
                   interval=0.05, describe=lambda: replica.output)
        return time.monotonic()

    def wait_standing_by(self, replica: Replica) -> None:
        wait_until(f"{replica.name} to stand by", lambda: "Standing by" in replica.output, describe=lambda: replica.output)
        response = wait_until(f"{replica.name} to answer its probe", replica.probe)
        assert response.status_code == 200
        assert response.json()["leading"] is False

    def create_tag(self, name: str) -> tuple[str, str]:
        """Create a RepositoryTag whose pass moves a tag with one PUT; return its repository and digest."""
        repository = f"{QUAY_NAMESPACE}/ha-{name}-{os.urandom(3).hex()}"
        manifest_digest = digest(repository)
        # The image is pushed under another tag, so the operator moves `prod` to it with one PUT.
        self.quay.add_manifest(repository, manifest_digest)
        self.quay.move_tag(repository, "build", manifest_digest)
        self.cluster.apply_tag(name, repository, "prod", manifest_digest)
        return repository, manifest_digest

    def wait_in_sync(self, name: str, timeout: float = 60.0) -> float:
        self.cluster.wait_for(name, ready_with("True", "InSync"), timeout=timeout)
        return time.monotonic()

    def logs(self) -> str:
        return "\n".join(f"--- {replica.name}\n{replica.output}" for replica in self.replicas)


@pytest.fixture
def ha(control_plane: ControlPlane, crd: None, quay: QuayDouble, namespace: str, tmp_path: Path) -> Iterator[Fixture]:
    fixture = Fixture(control_plane, namespace, quay, tmp_path)
    try:
        yield fixture
    finally:
        for replica in fixture.replicas:
            replica.stop()


def test_only_leader_writes(ha: Fixture) -> None:
    first = ha.replica("first")
    ha.wait_leading(first)
    second = ha.replica("second")
    ha.wait_standing_by(second)

    names = [f"only-{index}" for index in range(5)]
    created = {name: ha.create_tag(name) for name in names}
    for name in names:
        ha.wait_in_sync(name)
    # Give a second writer time to show up: several renewals and a refresh of every resource.
    time.sleep(RETRY_PERIOD * 3)

    for name, (repository, manifest_digest) in created.items():
        assert tag_puts(ha.quay, repository, "prod") == 1, name
        assert ha.quay.alive_digest(repository, "prod") == manifest_digest
    assert ha.holder() == first.identity
    assert "Moved tag prod" in first.output
    assert "Moved tag" not in second.output
    assert "RepositoryTag" not in second.output
    standby_answer = second.probe()
    assert standby_answer is not None
    assert standby_answer.status_code == 200
    assert standby_answer.json() == {"leading": False, "holder": first.identity}
    leader_answer = first.probe()
    assert leader_answer is not None
    assert leader_answer.status_code == 200
    assert "leading" not in leader_answer.json()

    # A standby stops at once on SIGTERM and leaves the leader's Lease alone.
    stopped_at = second.send(signal.SIGTERM)
    assert second.wait(timeout=10) == 0, second.output
    assert time.monotonic() - stopped_at < 3
    assert ha.holder() == first.identity


def test_sigterm_hands_over_to_standby(ha: Fixture) -> None:
    first = ha.replica("first")
    ha.wait_leading(first)
    second = ha.replica("second")
    ha.wait_standing_by(second)
    before, _ = ha.create_tag("before")
    ha.wait_in_sync("before")

    terminated_at = first.send(signal.SIGTERM)
    after, _ = ha.create_tag("after")
    took_over_at = ha.wait_leading(second, timeout=TAKEOVER_BOUND * 3)
    exit_code = first.wait()
    exited_at = time.monotonic()
    in_sync_at = ha.wait_in_sync("after", timeout=RECONCILE_GAP_BOUND * 3)

    takeover = took_over_at - terminated_at
    gap = in_sync_at - terminated_at
    print(f"SIGTERM handover: takeover {takeover:.2f} s, old leader exited after {exited_at - terminated_at:.2f} s, "
          f"reconcile gap {gap:.2f} s")
    assert exit_code == 0, first.output
    assert exited_at - terminated_at < TAKEOVER_BOUND, first.output
    assert "Released Lease" in first.output
    assert takeover < TAKEOVER_BOUND, ha.logs()
    assert gap < RECONCILE_GAP_BOUND, ha.logs()
    # The new leader checks the old resource and finds it in sync: no second write.
    assert tag_puts(ha.quay, before, "prod") == 1
    assert tag_puts(ha.quay, after, "prod") == 1
    assert "Moved tag prod" in second.output


def test_rolling_update_keeps_reconciling(ha: Fixture) -> None:
    """Start the new replica, wait until it is ready, then stop the old one, as maxSurge 1 and maxUnavailable 0 do."""
    old = ha.replica("old")
    ha.wait_leading(old)
    ha.create_tag("before")
    ha.wait_in_sync("before")

    new = ha.replica("new")
    ha.wait_standing_by(new)
    terminated_at = old.send(signal.SIGTERM)
    ha.create_tag("during")
    # Probe the new replica as the kubelet would, while it takes over and kopf binds the port.
    unanswered: list[float] = []
    while ha.holder() != new.identity and time.monotonic() - terminated_at < TAKEOVER_BOUND * 3:
        answer = new.probe()
        if answer is None or answer.status_code != 200:
            unanswered.append(time.monotonic())
        time.sleep(0.05)
    took_over_at = time.monotonic()
    in_sync_at = ha.wait_in_sync("during", timeout=RECONCILE_GAP_BOUND * 3)
    answer = wait_until("kopf's liveness endpoint in the new leader", new.probe, timeout=5)

    gap = in_sync_at - terminated_at
    print(f"Rolling update: takeover {took_over_at - terminated_at:.2f} s, reconcile gap {gap:.2f} s, "
          f"{len(unanswered)} unanswered probes")
    assert old.wait() == 0, old.output
    assert ha.holder() == new.identity
    assert took_over_at - terminated_at < TAKEOVER_BOUND, ha.logs()
    assert gap < RECONCILE_GAP_BOUND, ha.logs()
    assert answer.status_code == 200
    # The standby's server closes just before kopf binds the port. Probes 50 ms apart missed none in
    # the measured runs, but a loaded machine may stretch that moment over one or two.
    assert len(unanswered) <= 2, unanswered


def test_sigkill_waits_for_lease_expiry(ha: Fixture) -> None:
    first = ha.replica("first")
    ha.wait_leading(first)
    second = ha.replica("second")
    ha.wait_standing_by(second)

    killed_at = first.send(signal.SIGKILL)
    repository, _ = ha.create_tag("after-kill")
    took_over_at = ha.wait_leading(second, timeout=LEASE_DURATION + SLACK * 2)
    in_sync_at = ha.wait_in_sync("after-kill", timeout=RECONCILE_GAP_BOUND * 3)

    takeover = took_over_at - killed_at
    print(f"SIGKILL handover: takeover {takeover:.2f} s, reconcile gap {in_sync_at - killed_at:.2f} s")
    # The standby saw the last renewal at most one retry period before the kill, and waits a lease
    # duration from then, plus up to one jittered retry period.
    assert takeover >= LEASE_DURATION - RETRY_WITH_JITTER, ha.logs()
    assert takeover < LEASE_DURATION + RETRY_WITH_JITTER + SLACK, ha.logs()
    assert in_sync_at - killed_at < LEASE_DURATION + RECONCILE_GAP_BOUND, ha.logs()
    assert tag_puts(ha.quay, repository, "prod") == 1


def test_lost_lease_stops_leader(ha: Fixture) -> None:
    """When another identity takes the Lease, the leader stops its loops and exits non-zero."""
    first = ha.replica("first")
    ha.wait_leading(first)
    ha.create_tag("before")
    ha.wait_in_sync("before")

    overwritten_at = ha.overwrite_lease("intruder", 3600)
    exit_code = first.wait(timeout=RENEW_DEADLINE + SLACK * 2)
    exited_after = time.monotonic() - overwritten_at

    assert exit_code == 1, first.output
    assert exited_after < RETRY_PERIOD + SLACK, first.output
    assert "Lost Lease" in first.output
    assert "is held by intruder" in first.output
    assert "stopped after losing the leader election Lease" in first.output

    # No replica leads now, so a new resource gets no write until the intruder releases the Lease.
    second = ha.replica("second")
    ha.wait_standing_by(second)
    repository, _ = ha.create_tag("leaderless")
    time.sleep(RETRY_PERIOD * 3)
    assert tag_puts(ha.quay, repository, "prod") == 0
    ha.overwrite_lease("", 1)
    ha.wait_leading(second, timeout=RETRY_WITH_JITTER + SLACK)
    ha.wait_in_sync("leaderless")
    assert tag_puts(ha.quay, repository, "prod") == 1
