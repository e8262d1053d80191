"""The operator's own limit of requests per second to one Quay server, seen from the double."""

from __future__ import annotations

import time

import pytest
import yaml

from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, repository_tag
from .test_scale_and_paging import ready_reasons

pytestmark = pytest.mark.controlplane

RATE = 10
BURST = 5
OPERATOR_SETTINGS = {"MAX_REQUESTS_PER_SECOND": str(RATE), "REQUEST_BURST": str(BURST), "REFRESH_INTERVAL": "0"}
RESOURCES = 25


def test_requests_stay_under_rate(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    image = digest(repository + "/rated")
    quay.add_manifest(repository, image)
    quay.move_tag(repository, "base", image)
    quay.reset_requests()

    manifests = [repository_tag(f"rated-{index}", repository, f"t{index}", image) for index in range(RESOURCES)]
    cluster.plane.kubectl("apply", "-n", cluster.namespace, "-f", "-", input=yaml.safe_dump_all(manifests))
    # Generous, because leftover resources of other modules share the rate limit.
    deadline = time.monotonic() + 120
    while ready_reasons(cluster).get("True/InSync", 0) < RESOURCES:
        assert time.monotonic() < deadline, ready_reasons(cluster)
        time.sleep(0.5)

    # Resources that earlier test modules left in other namespaces use this double too (it is the
    # operator's --quay-url), so the count looks at this repository and the limit at all requests.
    ours = sorted(record.received for record in quay.requests() if f"/repository/{repository}/" in record.path)
    arrivals = sorted(record.received for record in quay.requests())
    # Three requests per new resource (read, PUT, read back), so the limit had to hold them back.
    assert len(ours) == 3 * RESOURCES
    assert ours[-1] - ours[0] >= (len(ours) - BURST) / RATE - 0.5
    # The operator starts at most the burst plus one second's worth of requests in any second. They
    # arrive at the double up to JITTER seconds late when the machine is busy (seen in the full suite),
    # which can bunch them, so a second at the double may hold JITTER seconds' worth more. Without the
    # limit, hundreds would arrive in one second.
    jitter = 0.5
    for index, start in enumerate(arrivals):
        in_window = sum(1 for arrival in arrivals[index:] if arrival < start + 1.0)
        assert in_window <= BURST + RATE * (1 + jitter), f"{in_window} requests within one second from {start:.2f}"
