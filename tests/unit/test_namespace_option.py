"""The -n/--namespace option: exact namespace names only, because kopf's scanning is off with -n."""

from __future__ import annotations

import pytest

from quay_tag_operator.__main__ import parse_args


def test_namespaces_kept_in_order() -> None:
    args = parse_args(["-n", "team-a", "--namespace", "0ps", "-n", "a" * 63])

    assert args.namespace == ["team-a", "0ps", "a" * 63]


def test_no_namespace_means_all() -> None:
    assert parse_args([]).namespace == []


@pytest.mark.parametrize(
    "value",
    ["team-*", "!kube-system", "team-?", "a,b", "Team", "-team", "team-", "team.a", "", "a" * 64],
)
def test_namespace_pattern_rejected(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_args([f"--namespace={value}"])

    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert f"invalid namespace name {value!r}" in error
    assert "give the exact name" in error
