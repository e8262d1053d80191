from __future__ import annotations

from quay_tag_operator.claims import Claim, claim_key, conflicting_winner
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.models import RepositoryTagSpec

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def claim(created: str, uid: str, digest: str) -> Claim:
    return Claim(created=created, uid=uid, namespace="team", name=uid, manifest_digest=digest)


def spec(**connection: str) -> RepositoryTagSpec:
    values: dict[str, object] = {"repository": "quayadmin/busybox", "tag": "test", "manifestDigest": A}
    if connection:
        values["connection"] = connection
    return RepositoryTagSpec.model_validate(values)


def test_oldest_claim_wins() -> None:
    old, young = claim("2026-01-01T00:00:00Z", "old", A), claim("2026-02-01T00:00:00Z", "young", B)
    assert conflicting_winner(young, [young, old]) == old
    assert conflicting_winner(old, [young, old]) is None


def test_same_creation_time_orders_by_uid() -> None:
    first, second = claim("2026-01-01T00:00:00Z", "aaa", A), claim("2026-01-01T00:00:00Z", "bbb", B)
    assert conflicting_winner(second, [first, second]) == first


def test_agreeing_claims_do_not_conflict() -> None:
    old, young = claim("2026-01-01T00:00:00Z", "old", A), claim("2026-02-01T00:00:00Z", "young", A)
    assert conflicting_winner(young, [young, old]) is None


def test_claim_alone_does_not_conflict() -> None:
    only = claim("2026-01-01T00:00:00Z", "only", A)
    assert conflicting_winner(only, []) is None


def test_claim_key_normalizes_server() -> None:
    config = OperatorConfig(quay_url="https://Quay.Example.com/")
    default = claim_key(spec(), config)
    explicit = claim_key(spec(url="https://quay.example.com:443"), config)
    assert default == explicit == ("https://quay.example.com:443", "quayadmin/busybox", "test")


def test_claim_key_ignores_path_tricks() -> None:
    config = OperatorConfig(quay_url="https://quay.example.com")
    assert claim_key(spec(url="https://quay.example.com/."), config) == claim_key(spec(), config)
    assert claim_key(spec(url="https://quay.example.com/some/path/"), config) == claim_key(spec(), config)


def test_claim_key_differs_by_server() -> None:
    config = OperatorConfig(quay_url="https://quay.example.com")
    assert claim_key(spec(url="https://quay.other.example"), config) != claim_key(spec(), config)


def test_claim_key_without_server_is_none() -> None:
    assert claim_key(spec(), OperatorConfig()) is None
