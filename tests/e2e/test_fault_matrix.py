"""Quay faults, each injected into the double for one resource, all at once under one operator.

Each case gets a repository of its own and one RepositoryTag that must move tag ``target``
from ``old`` to ``new``. The fault rule matches that repository only. For each case the test
checks the Ready reason and that retries back off: the faulted requests over a fixed window
stay under what the reason's backoff allows. It also checks that no other tag changes, and
that the resource reaches InSync with exactly one applied write once the fault is cleared.
The operator must survive all of it without a traceback.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kopf.testing import KopfRunner

from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble
from quay_tag_testing.quay_double.traffic import RequestRecord

from .conftest import QUAY_NAMESPACE, TOKEN
from .kube import Cluster, digest, ready, run_operator, tag_rows

pytestmark = pytest.mark.controlplane

# Seconds before a Quay request times out. The slow-body and latency cases wait longer.
REQUEST_TIMEOUT = 1.5
STALL_SECONDS = 6.0
# Seconds over which the faulted requests of each case are counted.
WINDOW_SECONDS = 20.0
RETRY_AFTER_SECONDS = 12

PROXY_PAGE = "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr>nginx</body></html>"
PAGE_JSON = '{"tags": [], "page": 1, "has_additional": false}'


def quay_error(status: int, error_type: str, detail: str) -> dict[str, Any]:
    return {
        "detail": detail,
        "error_message": detail,
        "error_type": error_type,
        "title": error_type,
        "type": f"/api/v1/error/{error_type}",
        "status": status,
    }


@dataclass(frozen=True)
class FaultCase:
    """One fault rule (without its path), the Ready reason it must cause and the retry policy to check."""

    name: str
    rule: dict[str, Any]
    reason: str
    # First delay of the reason's backoff, in seconds; each later delay doubles.
    backoff: float
    retry_after: float = 0.0
    # True when the operator retries soon enough for the test to see recovery without a refresh request.
    recovers_unaided: bool = True


CASES = (
    FaultCase("bad-request", {"status": 400, "body": {"message": "Bad request"}}, "QuayRequestRejected", 60),
    FaultCase("unauthorized", {"status": 401, "body": quay_error(401, "invalid_token", "Requires authentication")},
              "Unauthorized", 60),
    FaultCase("forbidden", {"status": 403, "body": quay_error(403, "insufficient_scope", "Unauthorized")},
              "Forbidden", 60),
    FaultCase("not-found", {"status": 404, "body": quay_error(404, "not_found", "Not Found")},
              "RepositoryNotFound", 60),
    FaultCase("immutable-put", {"method": "PUT", "status": 409, "body": quay_error(409, "tag_immutable", "immutable")},
              "TagImmutable", 300, recovers_unaided=False),
    FaultCase("conflict-put", {"method": "PUT", "status": 409, "body": {"message": "Conflict"}},
              "QuayRequestRejected", 60),
    FaultCase("rate-limited-retry-after",
              {"status": 429, "body": PROXY_PAGE.format(status="429 Too Many Requests"),
               "headers": {"Retry-After": str(RETRY_AFTER_SECONDS)}},
              "RateLimited", 5, retry_after=RETRY_AFTER_SECONDS),
    FaultCase("rate-limited", {"status": 429, "body": PROXY_PAGE.format(status="429 Too Many Requests")},
              "RateLimited", 5),
    FaultCase("server-error-html", {"status": 500, "body": PROXY_PAGE.format(status="500 Internal Server Error")},
              "QuayUnavailable", 2),
    FaultCase("bad-gateway-html", {"status": 502, "body": PROXY_PAGE.format(status="502 Bad Gateway")},
              "QuayUnavailable", 2),
    FaultCase("gateway-timeout-html", {"status": 504, "body": PROXY_PAGE.format(status="504 Gateway Time-out")},
              "QuayUnavailable", 2),
    FaultCase("server-error-put", {"method": "PUT", "status": 500, "body": PROXY_PAGE.format(status="500")},
              "QuayUnavailable", 2),
    FaultCase("truncated-json", {"status": 200, "body": PAGE_JSON[:20], "content_type": "application/json"},
              "InvalidQuayResponse", 2),
    FaultCase("not-json", {"status": 200, "body": "<html><body>Welcome</body></html>", "content_type": "text/html"},
              "InvalidQuayResponse", 2),
    FaultCase("connection-reset", {"drop": True}, "QuayUnavailable", 2),
    FaultCase("connection-reset-put", {"method": "PUT", "drop": True}, "QuayUnavailable", 2),
    FaultCase("slow-body", {"status": 200, "body": PAGE_JSON, "body_delay": STALL_SECONDS}, "QuayUnavailable", 2),
    FaultCase("latency-spike", {"delay": STALL_SECONDS}, "QuayUnavailable", 2),
)

OPERATOR_SETTINGS = {"REQUEST_TIMEOUT": str(REQUEST_TIMEOUT), "REFRESH_INTERVAL": "5m"}


@dataclass
class Prepared:
    """A case with its repository, digests and the fault's request path pattern."""

    case: FaultCase
    repository: str
    old: str
    new: str
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = f"^/api/v1/repository/{self.repository}/"

    @property
    def resource(self) -> str:
        return f"fault-{self.case.name}"

    def faulted(self, record: RequestRecord) -> bool:
        method = self.case.rule.get("method")
        return record.path.startswith(self.path[1:]) and (method is None or record.method == method)


def max_attempts(backoff: float, retry_after: float, window: float) -> int:
    """Return the most passes that can fall in ``window`` seconds after the first failed pass.

    Pass k (k >= 1) comes ``max(backoff * 2**(k-1), retry_after)`` seconds after pass k-1, and
    the window starts at the earliest just before pass 1, because the test opens it only after
    it has seen the reason that pass 0 wrote.
    """
    times = []
    moment = 0.0
    for attempt in range(64):
        moment += max(backoff * 2**attempt, retry_after)
        times.append(moment)
    first = times[0]
    return sum(1 for moment in times if moment <= first + window)


@pytest.fixture(scope="module")
def fault_operator(
    control_plane: ControlPlane, crd: None, quay: QuayDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KopfRunner]:
    token_file = tmp_path_factory.mktemp("operator") / "token"
    token_file.write_text(TOKEN + "\n")
    settings = {"QUAY_URL": quay.url, "TOKEN_FILE": str(token_file), "HISTORY_LIMIT": "10", **OPERATOR_SETTINGS}
    with run_operator(settings) as runner:
        yield runner
    assert "Traceback" not in runner.output, runner.output
    assert "Pass failed unexpectedly" not in runner.output, runner.output


def prepare(quay: QuayDouble, case: FaultCase) -> Prepared:
    repository = f"{QUAY_NAMESPACE}/fault-{case.name}-{secrets.token_hex(3)}"
    old, new = digest(repository + "/old"), digest(repository + "/new")
    for manifest in (old, new):
        quay.add_manifest(repository, manifest)
    # Bystander tags: "build" keeps the new manifest alive, "other" must never change.
    quay.move_tag(repository, "build", new)
    quay.move_tag(repository, "other", old)
    quay.move_tag(repository, "target", old)
    return Prepared(case, repository, old, new)


def reason_of(body: dict[str, Any]) -> str | None:
    condition = ready(body)
    if condition is None or body["status"].get("observedGeneration") != body["metadata"]["generation"]:
        return None
    return f"{condition['status']}/{condition['reason']}"


def wait_for_reasons(cluster: Cluster, expected: dict[str, str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll every resource until each has its expected ``status/reason``; return their bodies."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = {name: cluster.get(name) for name in expected}
        found = {name: reason_of(body) for name, body in bodies.items()}
        if all(found[name] == want for name, want in expected.items()):
            return bodies
        if time.monotonic() > deadline:
            wrong = {name: f"{found[name]} (expected {want})" for name, want in expected.items() if found[name] != want}
            pytest.fail(f"resources did not reach their Ready reasons in {timeout} s: {wrong}")
        time.sleep(0.5)


def test_fault_matrix(
    control_plane: ControlPlane,
    namespace: str,
    quay: QuayDouble,
    fault_operator: KopfRunner,
    record_property: Any,
) -> None:
    cluster = Cluster(control_plane, namespace)
    prepared = [prepare(quay, case) for case in CASES]
    rows_before = {item.repository: tag_rows(quay, item.repository) for item in prepared}
    for item in prepared:
        quay.add_fault(path=item.path, **item.case.rule)
    quay.reset_requests()

    for item in prepared:
        cluster.apply_tag(item.resource, item.repository, "target", item.new)
    faulted = wait_for_reasons(
        cluster, {item.resource: f"False/{item.case.reason}" for item in prepared}, timeout=60
    )
    for item in prepared:
        condition = ready(faulted[item.resource])
        assert condition is not None
        assert TOKEN not in condition["message"], f"{item.case.name}: the token is in the message"
        assert quay.alive_digest(item.repository, "target") == item.old, f"{item.case.name}: the tag moved"

    # Count each case's faulted requests over a fixed window.
    window_start = time.monotonic()
    time.sleep(WINDOW_SECONDS)
    window_end = time.monotonic()
    assert not fault_operator.future.done(), "the operator stopped while faults were injected"
    records = quay.requests()
    quay.clear_faults()
    cleared_at = time.monotonic()

    counts: dict[str, int] = {}
    for item in prepared:
        # Every request that matched the rule before it was cleared met the fault.
        attempts = [record for record in records if item.faulted(record)]
        in_window = [record for record in attempts if window_start <= record.received <= window_end]
        counts[item.case.name] = len(in_window)
        # Two seconds of slack for passes that start late on a busy machine.
        bound = max_attempts(item.case.backoff, item.case.retry_after, WINDOW_SECONDS + 2)
        assert len(in_window) <= bound, (
            f"{item.case.name}: {len(in_window)} faulted requests in {WINDOW_SECONDS} s, "
            f"the {item.case.reason} backoff allows {bound}"
        )
        gaps = [later.received - earlier.received for earlier, later in zip(attempts, attempts[1:])]
        if item.case.retry_after:
            assert all(gap >= item.case.retry_after - 0.5 for gap in gaps), (
                f"{item.case.name}: retried before Retry-After ({RETRY_AFTER_SECONDS} s): gaps {gaps}"
            )
        assert all(gap >= item.case.backoff - 0.5 for gap in gaps), f"{item.case.name}: gaps {gaps} below the backoff"

    # Slow reasons wait minutes; the refresh annotation asks for a pass now, as a person would.
    for item in prepared:
        if not item.case.recovers_unaided:
            control_plane.kubectl(
                "annotate", "repositorytag", item.resource, "-n", namespace, f"quaytag.dev/refresh={time.time()}"
            )
    wait_for_reasons(cluster, {item.resource: "True/InSync" for item in prepared}, timeout=75)
    recovered_after = time.monotonic() - cleared_at

    assert not fault_operator.future.done(), "the operator stopped"
    for item in prepared:
        assert quay.alive_digest(item.repository, "target") == item.new
        rows_after = tag_rows(quay, item.repository)
        others_before = [row for row in rows_before[item.repository] if row["name"] != "target"]
        others_after = [row for row in rows_after if row["name"] != "target"]
        assert others_after == others_before, f"{item.case.name}: a tag other than target changed"
        target_digests = [row["manifest_digest"] for row in rows_after if row["name"] == "target"]
        assert target_digests == [item.old, item.new], f"{item.case.name}: target rows {target_digests}"
    writes = [record for record in quay.requests() if record.method != "GET"]
    assert all(record.path.endswith("/tag/target") for record in writes), [record.path for record in writes]

    record_property("fault_cases", len(CASES))
    record_property("faulted_requests_in_window", counts)
    record_property("seconds_to_recover", round(recovered_after, 1))
    # KopfRunner swaps sys.stdout while the operator runs, so the summary goes to the real one.
    print(f"\n{len(CASES)} fault cases ran; faulted requests in {WINDOW_SECONDS:.0f} s: {counts}; "
          f"all InSync {recovered_after:.1f} s after the faults were cleared", file=sys.__stdout__)
