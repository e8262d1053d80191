"""The Quay client and one reconcile pass against the running Quay test double."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from quay_tag_operator import reasons
from quay_tag_operator.decision import Action
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.quay import errors
from quay_tag_operator.quay.client import QuayClient, QuayClientPool
from quay_tag_operator.reconcile import reconcile
from quay_tag_testing.quay_double.runner import QuayDouble

TOKEN = "integration-token"
REPOSITORY = "quayadmin/app"
SEED = {
    "namespaces": [{"name": "quayadmin"}, {"name": "other"}],
    "users": [{"name": "quayadmin"}, {"name": "other"}, {"name": "viewer", "roles": {"quayadmin": "read"}}],
    "tokens": [
        {"token": TOKEN, "user": "quayadmin", "scopes": ["repo:read", "repo:write"]},
        {"token": "read-scope-token", "user": "quayadmin", "scopes": ["repo:read"]},
        {"token": "viewer-token", "user": "viewer", "scopes": ["repo:read", "repo:write"]},
    ],
}


def digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


A, B, C = digest("a"), digest("b"), digest("c")


@pytest.fixture
def quay() -> Iterator[QuayDouble]:
    with QuayDouble(SEED) as double:
        for manifest in (A, B, C):
            double.add_manifest(REPOSITORY, manifest)
        double.move_tag(REPOSITORY, "web", A)
        double.move_tag(REPOSITORY, "candidate", B)
        double.add_manifest("other/private", A)
        yield double


@pytest.fixture
def client(quay: QuayDouble, pool: QuayClientPool) -> QuayClient:
    return pool.client(quay.url, TOKEN)


def spec(tag: str, manifest_digest: str) -> RepositoryTagSpec:
    return RepositoryTagSpec(repository=REPOSITORY, tag=tag, manifest_digest=manifest_digest)


async def test_put_restore_delete_round_trip(client: QuayClient, quay: QuayDouble) -> None:
    await client.put_tag("quayadmin", "app", "web", B)
    assert quay.alive_digest(REPOSITORY, "web") == B

    await client.restore_tag("quayadmin", "app", "web", A)
    history = await client.list_tag_history("quayadmin", "app", "web")
    assert [row.manifest_digest for row in history.rows] == [A, B, A]
    assert [row.reversion for row in history.rows] == [True, False, False]
    assert history.rows[0].end_ts is None
    assert history.rows[1].end_ts == history.rows[0].start_ts

    await client.delete_tag("quayadmin", "app", "web")
    assert quay.alive_digest(REPOSITORY, "web") is None
    with pytest.raises(errors.QuayNotFound):
        await client.delete_tag("quayadmin", "app", "web")


async def test_history_over_many_pages(client: QuayClient, quay: QuayDouble) -> None:
    for index in range(230):
        quay.advance_clock(1)
        quay.move_tag(REPOSITORY, "busy", A if index % 2 else B)
    history = await client.list_tag_history("quayadmin", "app", "busy")
    assert len(history.rows) == 230
    assert history.complete
    starts = [row.start_ts for row in history.rows]
    assert starts == sorted(starts, reverse=True)
    assert len(set(starts)) == 230
    gets = [record for record in quay.requests() if record.method == "GET"]
    assert [record.query["page"] for record in gets] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("put_unknown_manifest", errors.QuayNotFound),
        ("put_unknown_repository", errors.QuayNotFound),
        ("list_foreign_namespace", errors.QuayForbidden),
        ("put_with_read_scope", errors.QuayForbidden),
        ("put_as_reader", errors.QuayForbidden),
        ("list_with_invalid_token", errors.QuayUnauthorized),
        ("put_invalid_tag_name", errors.QuayBadRequest),
    ],
)
async def test_double_refusals_map_to_errors(
    call: str, expected: type[errors.QuayError], quay: QuayDouble, pool: QuayClientPool
) -> None:
    client = pool.client(quay.url, TOKEN)
    with pytest.raises(errors.QuayError) as raised:
        if call == "put_unknown_manifest":
            await client.put_tag("quayadmin", "app", "web", C + "0")
        elif call == "put_unknown_repository":
            await client.put_tag("quayadmin", "missing", "web", A)
        elif call == "list_foreign_namespace":
            await client.list_tag_history("other", "private", "web")
        elif call == "put_with_read_scope":
            await pool.client(quay.url, "read-scope-token").put_tag("quayadmin", "app", "web", B)
        elif call == "put_as_reader":
            await pool.client(quay.url, "viewer-token").put_tag("quayadmin", "app", "web", B)
        elif call == "list_with_invalid_token":
            await pool.client(quay.url, "wrong").list_tag_history("quayadmin", "app", "web")
        elif call == "put_invalid_tag_name":
            await client.put_tag("quayadmin", "app", "-bad", B)
    assert type(raised.value) is expected
    assert TOKEN not in str(raised.value)


async def test_immutable_tag_is_conflict(client: QuayClient, quay: QuayDouble) -> None:
    quay.set_immutable(REPOSITORY, "web")
    with pytest.raises(errors.QuayTagImmutable) as raised:
        await client.put_tag("quayadmin", "app", "web", B)
    assert raised.value.error_type == "tag_immutable"
    assert not raised.value.temporary


@pytest.mark.parametrize("state", ["READ_ONLY", "MIRROR"])
async def test_read_only_repository_is_not_outage(client: QuayClient, quay: QuayDouble, state: str) -> None:
    quay.set_repository_state(REPOSITORY, state)
    with pytest.raises(errors.QuayRepositoryReadOnly) as raised:
        await client.restore_tag("quayadmin", "app", "web", B)
    assert not raised.value.temporary
    history = await client.list_tag_history("quayadmin", "app", "web")
    assert history.rows[0].manifest_digest == A


async def test_rate_limit_html_with_retry_after(client: QuayClient, quay: QuayDouble) -> None:
    quay.add_fault(status=429, body="<html><body>429 Too Many Requests</body></html>", headers={"Retry-After": "3"})
    with pytest.raises(errors.QuayRateLimited) as raised:
        await client.list_tag_history("quayadmin", "app", "web")
    assert raised.value.retry_after == 3.0
    assert "429 Too Many Requests" in str(raised.value)


async def test_proxy_gateway_error_is_temporary(client: QuayClient, quay: QuayDouble) -> None:
    quay.add_fault(status=502, body="<html><h1>502 Bad Gateway</h1></html>", count=1)
    with pytest.raises(errors.QuayServerError):
        await client.list_tag_history("quayadmin", "app", "web")
    history = await client.list_tag_history("quayadmin", "app", "web")
    assert history.rows[0].manifest_digest == A


async def test_dropped_connection_is_transport_error(client: QuayClient, quay: QuayDouble) -> None:
    quay.add_fault(drop=True, count=1)
    with pytest.raises(errors.QuayTransportError):
        await client.list_tag_history("quayadmin", "app", "web")


async def test_slow_response_times_out(client: QuayClient, quay: QuayDouble) -> None:
    quay.add_fault(delay=3.0, count=1)
    with pytest.raises(errors.QuayTransportError) as raised:
        await client.list_tag_history("quayadmin", "app", "web")
    assert "Timeout" in str(raised.value)


async def test_truncated_json_is_malformed(client: QuayClient, quay: QuayDouble) -> None:
    quay.add_fault(status=200, body='{"tags": [{"name": "web"', content_type="application/json", count=1)
    with pytest.raises(errors.QuayMalformedResponse):
        await client.list_tag_history("quayadmin", "app", "web")


async def test_reconcile_in_sync_makes_no_write(client: QuayClient, quay: QuayDouble) -> None:
    outcome = await reconcile(spec("web", A), client, token_source="test")
    assert outcome.reason is reasons.IN_SYNC
    assert outcome.written is None
    assert quay.request_counts().get("GET") == 1
    assert set(quay.request_counts()) == {"GET"}


async def test_reconcile_put_then_restore(client: QuayClient, quay: QuayDouble) -> None:
    outcome = await reconcile(spec("web", B), client, token_source="test")
    assert outcome.reason is reasons.IN_SYNC
    assert outcome.written is Action.PUT
    assert outcome.previous_digest == A

    outcome = await reconcile(spec("web", A), client, token_source="test")
    assert outcome.written is Action.RESTORE
    assert outcome.previous_digest == B
    assert outcome.history is not None
    assert outcome.history.rows[0].reversion


async def test_reconcile_new_resource_needs_three_requests(client: QuayClient, quay: QuayDouble) -> None:
    quay.reset_requests()
    await reconcile(spec("fresh", B), client, token_source="test")
    methods = [record.method for record in quay.requests()]
    assert methods == ["GET", "PUT", "GET"]


async def test_reconcile_reports_unpushed_manifest(client: QuayClient, quay: QuayDouble) -> None:
    outcome = await reconcile(spec("web", digest("never pushed")), client, token_source="test")
    assert outcome.reason is reasons.MANIFEST_NOT_FOUND
    assert outcome.written is None
    assert quay.alive_digest(REPOSITORY, "web") == A
    assert outcome.retry_delay(0) == 5.0


async def test_reconcile_reports_accepted_write_not_applied(client: QuayClient, quay: QuayDouble) -> None:
    # A proxy that returns success for the write without passing it on.
    quay.add_fault(method="PUT", status=201, body="Updated", content_type="application/json", count=1)
    outcome = await reconcile(spec("web", B), client, token_source="test")
    assert outcome.reason is reasons.WRITE_NOT_APPLIED
    assert outcome.written is Action.PUT
    assert A in outcome.message
    puts = [record for record in quay.requests() if record.method == "PUT"]
    assert len(puts) == 1


async def test_reconcile_rate_limited_honours_retry_after(client: QuayClient, quay: QuayDouble) -> None:
    quay.add_fault(status=429, body="<html>slow down</html>", headers={"Retry-After": "42"}, count=1)
    outcome = await reconcile(spec("web", B), client, token_source="test")
    assert outcome.reason is reasons.RATE_LIMITED
    assert outcome.retry_delay(0) == 42.0


async def test_reconcile_unauthorized_names_token_source(quay: QuayDouble, pool: QuayClientPool) -> None:
    client = pool.client(quay.url, "expired-token")
    outcome = await reconcile(spec("web", B), client, token_source='Secret "quay" key "token"')
    assert outcome.reason is reasons.UNAUTHORIZED
    assert 'Secret "quay" key "token"' in outcome.message
    assert "expired-token" not in outcome.message


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_to_other_host_not_followed(client: QuayClient, quay: QuayDouble, status: int) -> None:
    # A second server on another port stands for the host a compromised proxy would redirect to.
    with QuayDouble(SEED) as elsewhere:
        quay.add_fault(
            path=f"/repository/{REPOSITORY}/tag/",
            status=status,
            body="<html>Moved</html>",
            headers={"Location": f"{elsewhere.url}/api/v1/repository/{REPOSITORY}/tag/"},
        )

        with pytest.raises(errors.QuayUnexpectedStatus) as raised:
            await client.list_tag_history("quayadmin", "app", "web")

        assert elsewhere.requests() == []
        assert str(status) in raised.value.message
        assert TOKEN not in raised.value.message
