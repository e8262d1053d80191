from __future__ import annotations

import datetime
from typing import Any

from quay_tag_operator import reasons
from quay_tag_operator.decision import Action
from quay_tag_operator.quay.models import TagHistory, TagRow
from quay_tag_operator.reconcile import Outcome
from quay_tag_operator.status import build_status, status_patch

NOW = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def history() -> TagHistory:
    start = int(NOW.timestamp())
    return TagHistory(
        rows=(
            TagRow(name="test", manifest_digest=A, start_ts=start - 60, reversion=True),
            TagRow(name="test", manifest_digest=B, start_ts=start - 120, end_ts=start - 60),
        )
    )


def in_sync(written: Action | None = None) -> Outcome:
    return Outcome(reasons.IN_SYNC, "Tag test points at A.", history(), written, B if written else None)


def build(outcome: Outcome, current: dict[str, Any], *, now: datetime.datetime = NOW, generation: int = 1) -> dict[str, Any]:
    return build_status(outcome, current=current, generation=generation, now=now, history_limit=20)


def test_first_status_has_every_field() -> None:
    status = build(in_sync(Action.RESTORE), {})
    assert status["observedGeneration"] == 1
    assert status["currentDigest"] == A
    assert status["lastSyncTime"] == "2026-12-04T12:00:00Z"
    ready = status["conditions"][0]
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "InSync",
        "message": "Tag test points at A.",
        "lastTransitionTime": "2026-12-04T12:00:00Z",
        "observedGeneration": 1,
    }
    assert status["history"] == [
        {"manifestDigest": A, "startTime": "2026-12-04T11:59:00Z", "reversion": True},
        {
            "manifestDigest": B,
            "startTime": "2026-12-04T11:58:00Z",
            "endTime": "2026-12-04T11:59:00Z",
            "reversion": False,
        },
    ]


def test_repeated_in_sync_pass_patches_nothing() -> None:
    first = build(in_sync(Action.PUT), {})
    second = build(in_sync(), first, now=LATER)
    assert status_patch(first, second) == {}


def test_transition_time_moves_only_on_status_flip() -> None:
    failing = build(Outcome(reasons.QUAY_UNAVAILABLE, "down", None), {})
    still_failing = build(Outcome(reasons.RATE_LIMITED, "slow down", None), failing, now=LATER)
    assert still_failing["conditions"][0]["lastTransitionTime"] == "2026-12-04T12:00:00Z"
    assert still_failing["conditions"][0]["reason"] == "RateLimited"

    recovered = build(in_sync(), still_failing, now=LATER)
    assert recovered["conditions"][0]["lastTransitionTime"] == "2026-12-04T12:05:00Z"
    assert recovered["lastSyncTime"] == "2026-12-04T12:05:00Z"


def test_failure_without_history_keeps_observed_fields() -> None:
    good = build(in_sync(Action.PUT), {})
    failed = build(Outcome(reasons.QUAY_UNAVAILABLE, "down", None), good, now=LATER)
    patch = status_patch(good, failed)
    assert set(patch) == {"conditions"}
    assert patch["conditions"][0]["status"] == "False"


def test_new_generation_in_sync_moves_sync_time() -> None:
    first = build(in_sync(Action.PUT), {})
    second = build(in_sync(), first, now=LATER, generation=2)
    patch = status_patch(first, second)
    assert patch["observedGeneration"] == 2
    assert patch["lastSyncTime"] == "2026-12-04T12:05:00Z"
    assert patch["conditions"][0]["observedGeneration"] == 2


def test_other_conditions_are_kept() -> None:
    current = {"conditions": [{"type": "Suspended", "status": "False", "reason": "X", "message": "", "lastTransitionTime": "t"}]}
    status = build(in_sync(), current)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Suspended"]


def test_history_is_capped_and_expiration_shown() -> None:
    start = int(NOW.timestamp())
    rows = tuple(
        TagRow(name="test", manifest_digest=A, start_ts=start - i, end_ts=(start + 3600 if i == 0 else start - i + 1))
        for i in range(30)
    )
    outcome = Outcome(reasons.IN_SYNC, "ok", TagHistory(rows=rows))
    status = build_status(outcome, current={}, generation=1, now=NOW, history_limit=5)
    assert len(status["history"]) == 5
    assert status["history"][0]["expiration"] == "2026-12-04T13:00:00Z"
    assert "endTime" not in status["history"][0]
    assert status["currentDigest"] == A


def test_tag_without_alive_row_has_no_current_digest() -> None:
    start = int(NOW.timestamp())
    ended = TagHistory(rows=(TagRow(name="test", manifest_digest=A, start_ts=start - 100, end_ts=start - 10),))
    status = build(Outcome(reasons.MANIFEST_NOT_FOUND, "waiting", ended), {})
    assert status["currentDigest"] is None
