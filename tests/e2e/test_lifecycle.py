"""Keeping tags true over time: drift, steady state, deletion, suspension, conflicts, expiration, credentials."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any

import pytest

from quay_tag_testing.controlplane.server import ControlPlane, KubectlError
from quay_tag_testing.quay_double.runner import QuayDouble

from .kube import Cluster, digest, ready, ready_with

pytestmark = pytest.mark.controlplane

# A short operator-wide refresh interval, so that drift tests take seconds.
REFRESH_SECONDS = 2
OPERATOR_SETTINGS = {"REFRESH_INTERVAL": f"{REFRESH_SECONDS}s"}


def writes_to(quay: QuayDouble, repository: str) -> list[str]:
    return [
        f"{record.method} {record.path}"
        for record in quay.requests()
        if record.method != "GET" and f"/repository/{repository}/" in record.path
    ]


def requests_to(quay: QuayDouble, repository: str) -> int:
    return sum(1 for record in quay.requests() if f"/repository/{repository}/" in record.path)


def alive_row(quay: QuayDouble, repository: str, tag: str) -> dict[str, Any] | None:
    for entry in quay.state()["repositories"]:  # type: ignore[union-attr]
        if entry["repository"] == repository:  # type: ignore[index]
            for row in entry["tags"]:  # type: ignore[index]
                if row["name"] == tag and row["alive"]:
                    return row  # type: ignore[no-any-return]
    return None


def pushed(quay: QuayDouble, repository: str, label: str) -> str:
    """Push an image: store a manifest and keep it alive under a tag of its own."""
    manifest = digest(f"{repository}/{label}")
    quay.add_manifest(repository, manifest)
    quay.move_tag(repository, f"build-{label}", manifest)
    return manifest


def test_tag_moved_by_hand_is_moved_back(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    desired, intruder = pushed(quay, repository, "desired"), pushed(quay, repository, "intruder")
    cluster.apply_tag("drift", repository, "prod", desired)
    cluster.wait_for("drift", ready_with("True", "InSync"))

    quay.move_tag(repository, "prod", intruder)
    moved_at = time.monotonic()
    deadline = moved_at + REFRESH_SECONDS + 5
    while quay.alive_digest(repository, "prod") != desired:
        assert time.monotonic() < deadline, "the tag was not moved back within one refresh interval"
        time.sleep(0.1)

    event = cluster.wait_for_event("drift", "DriftCorrected")
    assert intruder in event["message"]
    assert desired in event["message"]
    assert event["type"] == "Normal"
    body = cluster.wait_for("drift", lambda body: body["status"]["history"][0]["manifestDigest"] == desired)
    assert [row["manifestDigest"] for row in body["status"]["history"][:3]] == [desired, intruder, desired]
    assert body["status"]["history"][0]["reversion"] is True


def test_in_sync_resource_writes_nothing(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("steady", repository, "steady", current)
    first = cluster.wait_for("steady", ready_with("True", "InSync"))
    time.sleep(1)  # let the first pass's writes settle
    before = cluster.get("steady")["metadata"]["resourceVersion"]
    writes_before = writes_to(quay, repository)
    reads_before = requests_to(quay, repository)

    time.sleep(REFRESH_SECONDS * 5 + 1)

    after = cluster.get("steady")
    assert after["metadata"]["resourceVersion"] == before
    assert writes_to(quay, repository) == writes_before
    assert requests_to(quay, repository) - reads_before >= 4, "the resource was not re-read on each refresh"
    assert after["status"] == first["status"] or after["status"]["lastSyncTime"] == first["status"]["lastSyncTime"]


def test_tags_in_sync_share_one_listing(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    names = [f"fleet-{index}" for index in range(12)]
    for name in names:
        cluster.apply_tag(name, repository, name, current)
    for name in names:
        cluster.wait_for(name, ready_with("True", "InSync"))
    time.sleep(1)  # let the first passes' writes settle
    versions = {name: cluster.get(name)["metadata"]["resourceVersion"] for name in names}
    requests_before = requests_to(quay, repository)
    writes_before = writes_to(quay, repository)

    cycles = 4
    time.sleep(REFRESH_SECONDS * cycles + 1)

    # One listing page per interval for the 12 tags, where reading each tag would take 12 requests.
    reads = requests_to(quay, repository) - requests_before
    assert 1 <= reads <= cycles + 2
    assert writes_to(quay, repository) == writes_before
    assert {name: cluster.get(name)["metadata"]["resourceVersion"] for name in names} == versions


def test_drift_in_shared_listing_is_corrected(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    desired, intruder = pushed(quay, repository, "desired"), pushed(quay, repository, "intruder")
    names = [f"shared-{index}" for index in range(8)]
    for name in names:
        cluster.apply_tag(name, repository, name, desired)
    for name in names:
        cluster.wait_for(name, ready_with("True", "InSync"))

    moved = names[:3]
    for name in moved:
        quay.move_tag(repository, name, intruder)
    deadline = time.monotonic() + REFRESH_SECONDS + 5
    while any(quay.alive_digest(repository, name) != desired for name in moved):
        assert time.monotonic() < deadline, "the moved tags were not moved back within one refresh interval"
        time.sleep(0.1)

    for name in moved:
        assert intruder in cluster.wait_for_event(name, "DriftCorrected")["message"]
    for name in names[3:]:
        assert not [event for event in cluster.events(name) if event["reason"] == "DriftCorrected"]


def test_refresh_interval_zero_stops_checks(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("manual", repository, "manual", current, refreshInterval="0")
    cluster.wait_for("manual", ready_with("True", "InSync"))
    time.sleep(0.5)
    reads_before = requests_to(quay, repository)
    time.sleep(REFRESH_SECONDS * 2 + 1)
    assert requests_to(quay, repository) == reads_before


def test_delete_policy_removes_tag(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("doomed", repository, "doomed", current, deletionPolicy="Delete")
    body = cluster.wait_for("doomed", ready_with("True", "InSync"))
    assert "quaytag.dev/finalizer" in body["metadata"].get("finalizers", [])

    cluster.plane.kubectl("delete", "repositorytag", "doomed", "-n", cluster.namespace, "--timeout=30s")
    assert quay.alive_digest(repository, "doomed") is None
    assert writes_to(quay, repository)[-1] == f"DELETE /api/v1/repository/{repository}/tag/doomed"


def test_orphan_policy_keeps_tag(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("kept", repository, "kept", current)
    body = cluster.wait_for("kept", ready_with("True", "InSync"))
    assert "quaytag.dev/finalizer" not in body["metadata"].get("finalizers", [])

    cluster.plane.kubectl("delete", "repositorytag", "kept", "-n", cluster.namespace, "--timeout=30s")
    assert quay.alive_digest(repository, "kept") == current


def test_delete_leaves_tag_when_suspended(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("frozen", repository, "frozen", current, deletionPolicy="Delete")
    cluster.wait_for("frozen", ready_with("True", "InSync"))
    cluster.apply_tag("frozen", repository, "frozen", current, deletionPolicy="Delete", suspend=True)
    cluster.wait_for("frozen", ready_with("True", "Suspended"))

    cluster.plane.kubectl("delete", "repositorytag", "frozen", "-n", cluster.namespace, "--timeout=30s")

    assert quay.alive_digest(repository, "frozen") == current
    event = cluster.wait_for_event("frozen", "TagLeftInQuay")
    assert "suspended" in event["message"]


def test_delete_leaves_tag_moved_elsewhere(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    ours, theirs = pushed(quay, repository, "ours"), pushed(quay, repository, "theirs")
    cluster.apply_tag("moved", repository, "moved", ours, deletionPolicy="Delete", refreshInterval="0")
    cluster.wait_for("moved", ready_with("True", "InSync"))
    quay.move_tag(repository, "moved", theirs)

    cluster.plane.kubectl("delete", "repositorytag", "moved", "-n", cluster.namespace, "--wait=false")
    event = cluster.wait_for_event("moved", "TagLeftInQuay")
    assert theirs in event["message"]
    _wait_gone(cluster, "moved")
    assert quay.alive_digest(repository, "moved") == theirs


def test_immutable_tag_fails_and_deletes_cleanly(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    first, second = pushed(quay, repository, "first"), pushed(quay, repository, "second")
    cluster.apply_tag("locked", repository, "locked", first, deletionPolicy="Delete")
    cluster.wait_for("locked", ready_with("True", "InSync"))
    quay.set_immutable(repository, "locked")

    cluster.apply_tag("locked", repository, "locked", second, deletionPolicy="Delete")
    body = cluster.wait_for("locked", ready_with("False", "TagImmutable"))
    condition = ready(body)
    assert condition is not None
    assert "immutable" in condition["message"]
    writes = len(writes_to(quay, repository))
    time.sleep(REFRESH_SECONDS * 3)
    assert len(writes_to(quay, repository)) == writes, "the operator retried an immutable tag quickly"

    cluster.plane.kubectl("delete", "repositorytag", "locked", "-n", cluster.namespace, "--wait=false")
    _wait_gone(cluster, "locked")
    assert quay.alive_digest(repository, "locked") == first


def test_suspend_stops_writes(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    desired, other = pushed(quay, repository, "desired"), pushed(quay, repository, "other")
    quay.move_tag(repository, "paused", other)
    cluster.apply_tag("paused", repository, "paused", desired, suspend=True)
    body = cluster.wait_for("paused", ready_with("False", "Suspended"))
    assert body["status"]["currentDigest"] == other
    assert writes_to(quay, repository) == []

    cluster.apply_tag("paused", repository, "paused", desired, suspend=False)
    cluster.wait_for("paused", ready_with("True", "InSync"))
    assert quay.alive_digest(repository, "paused") == desired


def test_two_claims_on_one_tag(
    cluster: Cluster, quay: QuayDouble, repository: str, control_plane: ControlPlane
) -> None:
    first, second = pushed(quay, repository, "first"), pushed(quay, repository, "second")
    cluster.apply_tag("owner", repository, "shared", first)
    cluster.wait_for("owner", ready_with("True", "InSync"))

    # Creation times have one-second resolution; a tie would be broken by uid, at random.
    time.sleep(1.1)
    rival_namespace = f"{cluster.namespace}-rival"
    control_plane.kubectl("create", "namespace", rival_namespace)
    rival = Cluster(control_plane, rival_namespace)
    rival.apply_tag("rival", repository, "shared", second)
    body = rival.wait_for("rival", ready_with("False", "Conflict"))
    condition = ready(body)
    assert condition is not None
    assert f"{cluster.namespace}/owner" in condition["message"]

    time.sleep(REFRESH_SECONDS * 3)
    assert quay.alive_digest(repository, "shared") == first
    assert writes_to(quay, repository).count(f"PUT /api/v1/repository/{repository}/tag/shared") == 1

    cluster.plane.kubectl("delete", "repositorytag", "owner", "-n", cluster.namespace)
    rival.wait_for("rival", ready_with("True", "InSync"), timeout=60)
    assert quay.alive_digest(repository, "shared") == second


def test_expiration_is_kept(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    first, second = pushed(quay, repository, "first"), pushed(quay, repository, "second")
    expires = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=3)
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.apply_tag("expiring", repository, "expiring", first, expiration=stamp)
    body = cluster.wait_for("expiring", ready_with("True", "InSync"))
    row = alive_row(quay, repository, "expiring")
    assert row is not None
    assert row["end_ms"] // 1000 == int(expires.timestamp())
    assert body["status"]["history"][0]["expiration"] == stamp
    cluster.wait_for_event("expiring", "ExpirationSet")

    # A move never carries the expiration over, so the operator sets it again on the new row.
    cluster.apply_tag("expiring", repository, "expiring", second, expiration=stamp)
    cluster.wait_for("expiring", ready_with("True", "InSync", generation=2))
    row = alive_row(quay, repository, "expiring")
    assert row is not None
    assert row["manifest_digest"] == second
    assert row["end_ms"] // 1000 == int(expires.timestamp())


def test_expiration_in_past_writes_nothing(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    desired = pushed(quay, repository, "desired")
    cluster.apply_tag("expired", repository, "expired", desired, expiration="2020-01-01T00:00:00Z")
    body = cluster.wait_for("expired", ready_with("False", "ExpirationInPast"))
    condition = ready(body)
    assert condition is not None
    assert "spec.expiration" in condition["message"]
    assert writes_to(quay, repository) == []


def test_deleted_secret_then_restored(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "quay-credentials", "labels": {"quaytag.dev/token": "true"}},
        "data": {"token": base64.b64encode(b"e2e-token").decode()},
    }
    cluster.apply(secret)
    reference = {"tokenSecretRef": {"name": "quay-credentials", "key": "token"}}
    cluster.apply_tag("secret-user", repository, "secret-user", current, connection=reference)
    cluster.wait_for("secret-user", ready_with("True", "InSync"))

    cluster.plane.kubectl("delete", "secret", "quay-credentials", "-n", cluster.namespace)
    cluster.wait_for("secret-user", ready_with("False", "SecretNotFound"))
    cluster.apply(secret)
    cluster.wait_for("secret-user", ready_with("True", "InSync"), timeout=30)


def test_secret_of_other_namespace_is_not_used(
    cluster: Cluster, quay: QuayDouble, repository: str, control_plane: ControlPlane
) -> None:
    current = pushed(quay, repository, "current")
    other_namespace = f"{cluster.namespace}-other"
    control_plane.kubectl("create", "namespace", other_namespace)
    Cluster(control_plane, other_namespace).apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "stolen", "labels": {"quaytag.dev/token": "true"}},
            "data": {"token": base64.b64encode(b"e2e-token").decode()},
        }
    )
    reference = {"tokenSecretRef": {"name": "stolen", "key": "token"}}
    cluster.apply_tag("thief", repository, "thief", current, connection=reference)
    body = cluster.wait_for("thief", ready_with("False", "SecretNotFound"))
    condition = ready(body)
    assert condition is not None
    assert cluster.namespace in condition["message"]


@pytest.mark.parametrize(
    "url", ["http://quay.internal.example:8080", "http://169.254.169.254", "http://[fe80::1]:8080"]
)
def test_host_outside_allow_list_is_refused(cluster: Cluster, quay: QuayDouble, url: str) -> None:
    cluster.apply_tag("elsewhere", "quayadmin/busybox", "latest", digest("x"), connection={"url": url})
    body = cluster.wait_for("elsewhere", ready_with("False", "HostNotAllowed"))
    condition = ready(body)
    assert condition is not None
    assert "allow-list" in condition["message"] or "link-local" in condition["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("repository", "quayadmin/other"), ("tag", "other"), ("connection", {"url": "http://127.0.0.1:1"})],
)
def test_identity_fields_cannot_change(cluster: Cluster, quay: QuayDouble, repository: str, field: str, value: Any) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("fixed", repository, "fixed", current)
    changed = {"repository": repository, "tag": "fixed", "manifestDigest": current, field: value}
    with pytest.raises(KubectlError) as raised:
        cluster.apply_tag("fixed", **{key: changed[key] for key in ("repository", "tag")},
                          manifest_digest=current, **{k: v for k, v in changed.items() if k == "connection"})
    assert "cannot change" in str(raised.value)


@pytest.mark.parametrize("interval", ["1s", "200h", "5 m", "-1m", "1d"])
def test_refresh_interval_out_of_range_is_rejected(cluster: Cluster, interval: str) -> None:
    with pytest.raises(KubectlError) as raised:
        cluster.apply_tag("bad-interval", "quayadmin/busybox", "x", digest("x"), refreshInterval=interval)
    assert "spec.refreshInterval" in str(raised.value)


def _wait_gone(cluster: Cluster, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.plane.kubectl("get", "repositorytag", name, "-n", cluster.namespace, check=False)
        if result.returncode != 0 and "NotFound" in result.stderr:
            return
        assert time.monotonic() < deadline, f"RepositoryTag {name} was not deleted in {timeout}s"
        time.sleep(0.3)


def test_refresh_annotation_checks_now(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    desired, intruder = pushed(quay, repository, "desired"), pushed(quay, repository, "intruder")
    cluster.apply_tag("on-demand", repository, "on-demand", desired, refreshInterval="0")
    cluster.wait_for("on-demand", ready_with("True", "InSync"))
    quay.move_tag(repository, "on-demand", intruder)
    time.sleep(REFRESH_SECONDS + 1)
    assert quay.alive_digest(repository, "on-demand") == intruder

    cluster.plane.kubectl(
        "annotate", "repositorytag", "on-demand", "-n", cluster.namespace, "quaytag.dev/refresh=1", "--overwrite"
    )
    deadline = time.monotonic() + 10
    while quay.alive_digest(repository, "on-demand") != desired:
        assert time.monotonic() < deadline, "the refresh annotation did not trigger a pass"
        time.sleep(0.1)
    cluster.wait_for_event("on-demand", "DriftCorrected")


def test_kubectl_wait_for_ready(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("waited", repository, "waited", current)
    result = cluster.plane.kubectl(
        "wait", "--for=condition=Ready", "repositorytag/waited", "-n", cluster.namespace, "--timeout=30s"
    )
    assert "condition met" in result.stdout


def test_unlabeled_secret_is_not_sent(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "database"},
            "data": {"password": base64.b64encode(b"e2e-token").decode()},
        }
    )
    reference = {"tokenSecretRef": {"name": "database", "key": "password"}}
    cluster.apply_tag("borrower", repository, "borrower", current, connection=reference)
    body = cluster.wait_for("borrower", ready_with("False", "SecretNotLabeled"))
    condition = ready(body)
    assert condition is not None
    assert "quaytag.dev/token=true" in condition["message"]
    assert requests_to(quay, repository) == 0


def test_other_port_of_quay_host_is_refused(cluster: Cluster, quay: QuayDouble) -> None:
    # The default Quay server's host on another port could be any service, so no token goes there.
    other_port = "http://127.0.0.1:1"
    cluster.apply_tag("side-door", "quayadmin/busybox", "latest", digest("x"), connection={"url": other_port})
    cluster.wait_for("side-door", ready_with("False", "HostNotAllowed"))


def test_shared_tag_survives_one_deletion(cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    current = pushed(quay, repository, "current")
    cluster.apply_tag("first", repository, "shared", current, deletionPolicy="Delete")
    cluster.apply_tag("second", repository, "shared", current, deletionPolicy="Delete")
    cluster.wait_for("first", ready_with("True", "InSync"))
    cluster.wait_for("second", ready_with("True", "InSync"))

    cluster.plane.kubectl("delete", "repositorytag", "first", "-n", cluster.namespace, "--wait=false")
    event = cluster.wait_for_event("first", "TagLeftInQuay")
    assert "second" in event["message"]
    _wait_gone(cluster, "first")
    assert quay.alive_digest(repository, "shared") == current
