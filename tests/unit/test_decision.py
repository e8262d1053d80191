from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quay_tag_operator.decision import (
    MAX_EXPIRATION_AFTER_START,
    MIN_EXPIRATION_AFTER_START,
    Action,
    decide,
    decide_expiration,
    expected_expiration,
)
from quay_tag_operator.quay.models import TagHistory, TagRow

NOW = 1_800_000_000
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def row(digest: str, start: int, end: int | None = None, *, reversion: bool = False) -> TagRow:
    return TagRow(name="test", manifest_digest=digest, start_ts=start, end_ts=end, reversion=reversion)


def history(*rows: TagRow) -> TagHistory:
    return TagHistory(rows=tuple(sorted(rows, key=lambda r: r.start_ts, reverse=True)))


def test_alive_row_at_desired_digest_is_no_op() -> None:
    decision = decide(A, history(row(A, NOW - 10)), now=NOW)
    assert decision.action is Action.NONE
    assert decision.current_digest == A


def test_digest_in_history_is_restored() -> None:
    rows = history(row(A, NOW - 100, NOW - 50), row(B, NOW - 50))
    decision = decide(A, rows, now=NOW)
    assert decision.action is Action.RESTORE
    assert decision.current_digest == B


def test_digest_not_in_history_is_put() -> None:
    decision = decide(C, history(row(A, NOW - 100, NOW - 50), row(B, NOW - 50)), now=NOW)
    assert decision.action is Action.PUT


def test_tag_without_rows_is_put() -> None:
    decision = decide(A, history(), now=NOW)
    assert decision.action is Action.PUT
    assert decision.current_digest is None


def test_deleted_tag_with_digest_in_history_is_restored() -> None:
    decision = decide(A, history(row(A, NOW - 100, NOW - 50)), now=NOW)
    assert decision.action is Action.RESTORE
    assert decision.current_digest is None


def test_expired_alive_row_counts_as_ended() -> None:
    # A scheduled expiration in the past means Quay no longer serves the tag.
    decision = decide(A, history(row(A, NOW - 100, NOW - 1)), now=NOW)
    assert decision.action is Action.RESTORE


def test_future_expiration_is_still_alive() -> None:
    decision = decide(A, history(row(A, NOW - 100, NOW + 3600)), now=NOW)
    assert decision.action is Action.NONE


@pytest.mark.parametrize(
    ("in_history", "rejected", "expected"),
    [
        (True, set(), Action.RESTORE),
        (True, {Action.RESTORE}, Action.PUT),
        (True, {Action.RESTORE, Action.PUT}, Action.WAIT),
        (False, set(), Action.PUT),
        (False, {Action.PUT}, Action.RESTORE),
        (False, {Action.PUT, Action.RESTORE}, Action.WAIT),
    ],
)
def test_rejected_writes_fall_back(in_history: bool, rejected: set[Action], expected: Action) -> None:
    rows = [row(B, NOW - 50)]
    if in_history:
        rows.append(row(A, NOW - 100, NOW - 50))
    decision = decide(A, history(*rows), now=NOW, rejected=frozenset(rejected))
    assert decision.action is expected


digests = st.sampled_from([A, B, C])
rows_strategy = st.lists(
    st.builds(
        row,
        digests,
        st.integers(min_value=NOW - 10_000, max_value=NOW),
        st.one_of(st.none(), st.integers(min_value=NOW - 10_000, max_value=NOW + 10_000)),
    ),
    max_size=12,
)


@given(desired=digests, rows=rows_strategy, rejected=st.sets(st.sampled_from([Action.PUT, Action.RESTORE])))
def test_decision_writes_only_when_needed(desired: str, rows: list[TagRow], rejected: set[Action]) -> None:
    tag_history = history(*rows)
    decision = decide(desired, tag_history, now=NOW, rejected=frozenset(rejected))
    alive = tag_history.alive_row(NOW)

    if alive is not None and alive.manifest_digest == desired:
        assert decision.action is Action.NONE
    else:
        assert decision.action is not Action.NONE
    assert decision.action not in rejected
    if decision.action is Action.WAIT:
        assert rejected == {Action.PUT, Action.RESTORE}


def test_expiration_unmanaged_when_absent() -> None:
    assert decide_expiration(None, history(row(A, NOW - 10)), now=NOW) is None


def test_expiration_set_when_row_has_none() -> None:
    assert decide_expiration(NOW + 86_400, history(row(A, NOW - 10)), now=NOW) == NOW + 86_400


def test_expiration_matching_row_is_left() -> None:
    assert decide_expiration(NOW + 86_400, history(row(A, NOW - 10, NOW + 86_400)), now=NOW) is None


def test_expiration_clamped_by_quay_is_left() -> None:
    # Quay keeps an expiration at least 1 hour after the row's start.
    start = NOW - 10
    rows = history(row(A, start, start + MIN_EXPIRATION_AFTER_START))
    assert decide_expiration(NOW + 60, rows, now=NOW) is None


def test_expiration_beyond_maximum_is_clamped() -> None:
    start = NOW - 10
    assert expected_expiration(start + 10 * MAX_EXPIRATION_AFTER_START, start) == start + MAX_EXPIRATION_AFTER_START


def test_expiration_other_time_is_changed() -> None:
    assert decide_expiration(NOW + 7_200, history(row(A, NOW - 10, NOW + 86_400)), now=NOW) == NOW + 7_200


def test_expiration_without_alive_row_waits() -> None:
    assert decide_expiration(NOW + 7_200, history(row(A, NOW - 100, NOW - 10)), now=NOW) is None
