"""Properties of the decision step against a model of Quay, and of history parsing and paging.

tests/unit/test_decision.py has the example cases and the basic no-op property. Here the
decision runs as reconcile.py runs it (decide, write, add a 404 to the rejected set, decide
again) against a small model of which writes Quay accepts. The paging properties serve
generated pages to the real QuayClient through httpx.MockTransport, which replaces Quay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from quay_tag_operator.decision import Action, decide, decide_expiration, expected_expiration
from quay_tag_operator.quay.client import MAX_PAGES, QuayClientPool
from quay_tag_operator.quay.models import TagHistory, TagPage, TagRow

NOW = 1_800_000_000
DIGESTS = ["sha256:" + letter * 64 for letter in "abcde"]
# At most one restore, one PUT and the restore fallback, as in reconcile.py.
MAX_WRITE_ATTEMPTS = 3


def history_of(rows: list[TagRow]) -> TagHistory:
    return TagHistory(rows=tuple(sorted(rows, key=lambda row: row.start_ts, reverse=True)))


@st.composite
def tag_rows(draw: st.DrawFn) -> TagRow:
    start = draw(st.integers(min_value=NOW - 10_000, max_value=NOW))
    end = draw(st.none() | st.integers(min_value=start, max_value=NOW + 10_000))
    return TagRow(
        name="test",
        manifest_digest=draw(st.sampled_from(DIGESTS)),
        start_ts=start,
        end_ts=end,
        reversion=draw(st.booleans()),
    )


@dataclass
class QuayRepository:
    """Which writes Quay accepts for one repository: the rules of PUT and restore."""

    # Manifests an alive tag of the repository references: PUT accepts these.
    alive: set[str]
    # Manifests still stored, alive or referenced only by dead rows: restore accepts these.
    stored: set[str]

    def accepts(self, action: Action, digest: str) -> bool:
        if action is Action.PUT:
            return digest in self.alive
        return digest in self.stored


@st.composite
def repositories(draw: st.DrawFn, history: TagHistory) -> QuayRepository:
    # The tag's alive row keeps its manifest alive; other tags may keep more alive. Every
    # manifest of the history is stored unless the garbage collector removed it.
    alive_row = history.alive_row(NOW)
    alive = set(draw(st.sets(st.sampled_from(DIGESTS))))
    if alive_row is not None:
        alive.add(alive_row.manifest_digest)
    history_digests = {row.manifest_digest for row in history.rows}
    collected = draw(st.sets(st.sampled_from(sorted(history_digests - alive)))) if history_digests - alive else set()
    dead_only = set(draw(st.sets(st.sampled_from(DIGESTS))))
    stored = alive | (history_digests - collected) | dead_only
    return QuayRepository(alive=alive, stored=stored)


@dataclass
class Pass:
    """The actions one pass chose, and the write Quay accepted, if any."""

    chosen: list[Action]
    accepted: Action | None


def run_pass(desired: str, history: TagHistory, quay: QuayRepository) -> Pass:
    rejected: set[Action] = set()
    chosen: list[Action] = []
    for _ in range(MAX_WRITE_ATTEMPTS):
        decision = decide(desired, history, now=NOW, rejected=frozenset(rejected))
        chosen.append(decision.action)
        if decision.action in (Action.NONE, Action.WAIT):
            return Pass(chosen, None)
        if quay.accepts(decision.action, desired):
            return Pass(chosen, decision.action)
        rejected.add(decision.action)
    return Pass(chosen, None)


def after_write(history: TagHistory, action: Action, digest: str) -> TagHistory:
    # Quay ends the alive row and starts a new one at the same instant.
    rows = [row.model_copy(update={"end_ts": NOW}) if row.is_alive(NOW) else row for row in history.rows]
    rows.append(TagRow(name="test", manifest_digest=digest, start_ts=NOW, reversion=action is Action.RESTORE))
    return history_of(rows)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, TagHistory, QuayRepository]:
    history = history_of(draw(st.lists(tag_rows(), max_size=10)))
    return draw(st.sampled_from(DIGESTS)), history, draw(repositories(history))


@settings(max_examples=300)
@given(scenario=scenarios())
def test_decision_writes_only_when_alive_row_differs(scenario: tuple[str, TagHistory, QuayRepository]) -> None:
    desired, history, quay = scenario
    alive = history.alive_row(NOW)
    outcome = run_pass(desired, history, quay)

    if alive is not None and alive.manifest_digest == desired:
        assert outcome.chosen == [Action.NONE]
    else:
        assert Action.NONE not in outcome.chosen


@settings(max_examples=300)
@given(scenario=scenarios())
def test_decision_restores_only_digest_in_history_first(scenario: tuple[str, TagHistory, QuayRepository]) -> None:
    desired, history, quay = scenario
    outcome = run_pass(desired, history, quay)

    writes = [action for action in outcome.chosen if action in (Action.PUT, Action.RESTORE)]
    if writes and writes[0] is Action.RESTORE:
        assert history.contains_digest(desired)
    # A restore of a digest outside the history only follows a PUT that Quay rejected.
    if Action.RESTORE in writes and not history.contains_digest(desired):
        assert writes == [Action.PUT, Action.RESTORE]


@settings(max_examples=300)
@given(scenario=scenarios())
def test_decision_never_repeats_rejected_write(scenario: tuple[str, TagHistory, QuayRepository]) -> None:
    desired, history, quay = scenario
    outcome = run_pass(desired, history, quay)

    writes = [action for action in outcome.chosen if action in (Action.PUT, Action.RESTORE)]
    assert len(writes) == len(set(writes))
    assert len(outcome.chosen) <= MAX_WRITE_ATTEMPTS
    if outcome.chosen[-1] is Action.WAIT:
        assert not quay.accepts(Action.PUT, desired)
        assert not quay.accepts(Action.RESTORE, desired)


@settings(max_examples=300)
@given(scenario=scenarios())
def test_decision_rejected_only_on_facts_history_lacks(scenario: tuple[str, TagHistory, QuayRepository]) -> None:
    desired, history, quay = scenario
    outcome = run_pass(desired, history, quay)
    first = outcome.chosen[0]

    # Quay rejects the first write only when the history cannot show the reason: the manifest
    # was garbage collected (restore) or no alive tag references it (PUT).
    if first is Action.RESTORE and not quay.accepts(first, desired):
        assert desired not in quay.stored
    if first is Action.PUT and not quay.accepts(first, desired):
        assert desired not in quay.alive
    # Whenever Quay accepts some write, the pass finds one.
    if first is not Action.NONE and (quay.accepts(Action.PUT, desired) or quay.accepts(Action.RESTORE, desired)):
        assert outcome.accepted is not None


@settings(max_examples=300)
@given(scenario=scenarios())
def test_decision_converges_after_accepted_write(scenario: tuple[str, TagHistory, QuayRepository]) -> None:
    desired, history, quay = scenario
    outcome = run_pass(desired, history, quay)

    if outcome.accepted is not None:
        written = after_write(history, outcome.accepted, desired)
        assert decide(desired, written, now=NOW).action is Action.NONE


@settings(max_examples=300)
@given(
    rows=st.lists(tag_rows(), max_size=6),
    desired=st.none() | st.integers(min_value=NOW + 1, max_value=NOW + 300 * 86_400),
)
def test_expiration_written_at_most_once(rows: list[TagRow], desired: int | None) -> None:
    history = history_of(rows)
    alive = history.alive_row(NOW)
    chosen = decide_expiration(desired, history, now=NOW)

    if desired is None or alive is None:
        assert chosen is None
        return
    if chosen is None:
        assert alive.end_ts is not None
        assert abs(alive.end_ts - expected_expiration(desired, alive.start_ts)) <= 1
        return
    assert chosen == desired
    # Quay clamps the value to its window; the next pass must find it set and write nothing.
    clamped = history_of(
        [row.model_copy(update={"end_ts": expected_expiration(desired, row.start_ts)}) if row is alive else row
         for row in history.rows]
    )
    assert decide_expiration(desired, clamped, now=NOW) is None


# History pages as Quay's JSON.

timestamps = st.integers(min_value=0, max_value=253_402_300_799)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
KNOWN_KEYS = {"name", "reversion", "start_ts", "end_ts", "manifest_digest", "is_manifest_list", "size",
              "last_modified", "expiration"}


@st.composite
def row_payloads(draw: st.DrawFn, start: st.SearchStrategy[int] = timestamps) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": "test",
        "reversion": draw(st.booleans()),
        "start_ts": draw(start),
        "manifest_digest": draw(st.sampled_from(DIGESTS) | st.text(max_size=80)),
        "is_manifest_list": draw(st.booleans()),
        "size": draw(st.none() | st.integers(min_value=0, max_value=2**40)),
        "last_modified": draw(st.text(max_size=40)),
    }
    if draw(st.booleans()):
        row["end_ts"] = draw(timestamps)
        row["expiration"] = draw(st.text(max_size=40))
    # Newer Quay releases add fields such as immutable; they must not break parsing.
    extra = draw(st.dictionaries(st.text(max_size=12).filter(lambda key: key not in KNOWN_KEYS), json_scalars, max_size=3))
    return {**extra, **row}


@settings(max_examples=300)
@given(rows=st.lists(row_payloads(), max_size=20), page=st.integers(min_value=1, max_value=10**6), more=st.booleans())
def test_valid_page_parses(rows: list[dict[str, Any]], page: int, more: bool) -> None:
    parsed = TagPage.model_validate_json(json.dumps({"tags": rows, "page": page, "has_additional": more}))

    assert parsed.page == page
    assert parsed.has_additional is more
    assert [row.start_ts for row in parsed.tags] == [row["start_ts"] for row in rows]
    assert [row.end_ts for row in parsed.tags] == [row.get("end_ts") for row in rows]
    assert [row.manifest_digest for row in parsed.tags] == [row["manifest_digest"] for row in rows]


Serve = Callable[[int], httpx.Response]


def read_history(serve: Serve) -> tuple[TagHistory, list[int]]:
    """Read the tag's history from ``serve``, which maps a requested page number to a response."""
    requested: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        requested.append(page)
        return serve(page)

    async def read() -> TagHistory:
        # No request rate limit: the repeating server below is read for MAX_PAGES pages.
        pool = QuayClientPool(transport=httpx.MockTransport(handler), max_requests_per_second=0)
        try:
            return await pool.client("https://quay.example.com", "token").list_tag_history("quayadmin", "busybox", "test")
        finally:
            await pool.aclose()

    return asyncio.run(read()), requested


def page_response(rows: list[dict[str, Any]], page: int, more: bool) -> httpx.Response:
    return httpx.Response(200, json={"tags": rows, "page": page, "has_additional": more})


@st.composite
def paged_histories(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    # Distinct start times, newest first, cut into pages of any size: Quay's page size is its own choice.
    starts = sorted(draw(st.sets(st.integers(min_value=0, max_value=NOW), max_size=60)), reverse=True)
    rows = [draw(row_payloads(start=st.just(start))) for start in starts]
    pages: list[list[dict[str, Any]]] = []
    while rows:
        size = draw(st.integers(min_value=1, max_value=max(1, len(rows))))
        pages.append(rows[:size])
        rows = rows[size:]
    return pages or [[]]


@settings(max_examples=150, deadline=None)
@given(pages=paged_histories())
def test_paging_keeps_order_and_stops_at_last_page(pages: list[list[dict[str, Any]]]) -> None:
    history, requested = read_history(lambda page: page_response(pages[page - 1], page, page < len(pages)))

    assert requested == list(range(1, len(pages) + 1))
    assert history.complete
    assert [row.start_ts for row in history.rows] == [row["start_ts"] for page in pages for row in page]


@settings(max_examples=10, deadline=None)
@given(rows=st.lists(row_payloads(), min_size=1, max_size=5))
def test_paging_ends_when_server_repeats_a_page(rows: list[dict[str, Any]]) -> None:
    # The server returns the same rows on every page and always claims there are more.
    history, requested = read_history(lambda page: page_response(rows, page, True))

    assert len(requested) == MAX_PAGES
    assert not history.complete
    assert len(history.rows) <= len(rows)


@settings(max_examples=10, deadline=None)
@given(pages=paged_histories(), seed=st.randoms(use_true_random=False))
def test_paging_ends_when_server_lies_about_more(pages: list[list[dict[str, Any]]], seed: Any) -> None:
    # Pages repeat in random order, and has_additional is random.
    def serve(page: int) -> httpx.Response:
        return page_response(seed.choice(pages), page, seed.random() < 0.99)

    history, requested = read_history(serve)

    assert 1 <= len(requested) <= MAX_PAGES
    identities = [(row.identity, row.end_ts) for row in history.rows]
    assert len(identities) == len(set(identities))
