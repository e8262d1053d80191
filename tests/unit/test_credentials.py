from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

import pytest

from quay_tag_operator import reasons
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.credentials import (
    TOKEN_SECRET_LABEL,
    CredentialsError,
    StoredData,
    check_host_allowed,
    resolve_connection,
)
from quay_tag_operator.models import RepositoryTagSpec

DIGEST = "sha256:" + "a" * 64


LABELS = {TOKEN_SECRET_LABEL: "true"}


class Secrets:
    """Secrets of one namespace, labeled for the operator unless ``labels`` is given."""

    def __init__(
        self, namespace: str, secrets: dict[str, dict[str, str]], labels: Mapping[str, str] = LABELS
    ) -> None:
        self.namespace = namespace
        self.secrets = secrets
        self.labels = labels
        self.reads: list[tuple[str, str]] = []

    async def read(self, namespace: str, name: str) -> StoredData | None:
        self.reads.append((namespace, name))
        if namespace != self.namespace or name not in self.secrets:
            return None
        return StoredData(data=self.secrets[name], labels=self.labels)

    async def read_config_map(self, namespace: str, name: str) -> StoredData | None:
        return None


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def spec(**connection: object) -> RepositoryTagSpec:
    values: dict[str, object] = {"repository": "quayadmin/busybox", "tag": "test", "manifestDigest": DIGEST}
    if connection:
        values["connection"] = connection
    return RepositoryTagSpec.model_validate(values)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://quay.example.com", True),
        ("https://QUAY.example.com:443/", True),
        ("https://quay.example.com:8443", False),
        ("http://quay.example.com", False),
        ("https://mirror.example.com", True),
        ("https://mirror.example.com:8443", False),
        ("https://other.example.com:9000", True),
        ("https://other.example.com:9001", False),
        ("https://any-port.example.com:1234", True),
        ("http://any-port.example.com:1234", False),
        ("http://plain.example.com:8080", True),
        ("http://plain.example.com:8081", False),
        ("https://evil.example.com", False),
        ("http://169.254.169.254/latest", False),
        ("http://[fe80::1]:80", False),
        ("http://127.0.0.1:5000", False),
        ("https://user:password@quay.example.com", False),
        ("https://quay.example.com:99999", False),
    ],
)
def test_host_allow_list(url: str, allowed: bool) -> None:
    config = OperatorConfig(
        quay_url="https://quay.example.com",
        allowed_hosts="mirror.example.com, other.example.com:9000, any-port.example.com:*, "
        "http://plain.example.com:8080",
    )
    if allowed:
        check_host_allowed(url, config)
    else:
        with pytest.raises(CredentialsError) as raised:
            check_host_allowed(url, config)
        assert raised.value.reason is reasons.HOST_NOT_ALLOWED


def test_wildcard_allows_https_only_and_never_link_local() -> None:
    config = OperatorConfig(allowed_hosts="*")
    check_host_allowed("https://anything.example", config)
    with pytest.raises(CredentialsError):
        check_host_allowed("http://anything.example", config)
    with pytest.raises(CredentialsError):
        check_host_allowed("https://169.254.169.254", config)


async def test_token_read_from_own_namespace(tmp_path: Path) -> None:
    secrets = Secrets("team", {"quay": {"token": encoded(" abc \n")}})
    config = OperatorConfig(quay_url="https://quay.example.com")
    connection = await resolve_connection(
        spec(tokenSecretRef={"name": "quay", "key": "token"}), "team", config, secrets
    )
    assert connection.token == "abc"
    assert "abc" not in repr(connection)
    assert secrets.reads == [("team", "quay")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, reasons.SECRET_NOT_FOUND),
        ({}, reasons.SECRET_KEY_NOT_FOUND),
        ({"token": ""}, reasons.SECRET_KEY_NOT_FOUND),
        ({"token": encoded("   ")}, reasons.SECRET_KEY_NOT_FOUND),
        ({"token": "not base64!"}, reasons.SECRET_KEY_NOT_FOUND),
        ({"token": encoded("first\nsecond")}, reasons.SECRET_KEY_NOT_FOUND),
        ({"token": encoded("with space")}, reasons.SECRET_KEY_NOT_FOUND),
        ({"token": encoded("tökén")}, reasons.SECRET_KEY_NOT_FOUND),
    ],
)
async def test_secret_problems_have_reasons(data: dict[str, str] | None, reason: reasons.Reason) -> None:
    secrets = Secrets("team", {} if data is None else {"quay": data})
    config = OperatorConfig(quay_url="https://quay.example.com")
    with pytest.raises(CredentialsError) as raised:
        await resolve_connection(spec(tokenSecretRef={"name": "quay", "key": "token"}), "team", config, secrets)
    assert raised.value.reason is reason


async def test_token_file_is_default(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    config = OperatorConfig(quay_url="https://quay.example.com", token_file=token_file)
    connection = await resolve_connection(spec(), "team", config, Secrets("team", {}))
    assert connection.token == "from-file"
    assert connection.url == "https://quay.example.com"


async def test_unlabeled_secret_is_not_used() -> None:
    secrets = Secrets("team", {"database": {"password": encoded("hunter2")}}, labels={})
    config = OperatorConfig(quay_url="https://quay.example.com")
    with pytest.raises(CredentialsError) as raised:
        await resolve_connection(spec(tokenSecretRef={"name": "database", "key": "password"}), "team", config, secrets)
    assert raised.value.reason is reasons.SECRET_NOT_LABELED
    assert "hunter2" not in raised.value.message


@pytest.mark.parametrize("content", [None, "", "\n", "old-token\nnew-token\n", "two words"])
async def test_token_file_problems(tmp_path: Path, content: str | None) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    config = OperatorConfig(quay_url="https://quay.example.com", token_file=token_file)
    with pytest.raises(CredentialsError) as raised:
        await resolve_connection(spec(), "team", config, Secrets("team", {}))
    assert raised.value.reason is reasons.TOKEN_FILE_UNREADABLE


async def test_missing_url_and_token_are_reported() -> None:
    with pytest.raises(CredentialsError) as raised:
        await resolve_connection(spec(), "team", OperatorConfig(), Secrets("team", {}))
    assert raised.value.reason is reasons.MISSING_CONNECTION
    with pytest.raises(CredentialsError) as raised:
        await resolve_connection(spec(), "team", OperatorConfig(quay_url="https://q.example"), Secrets("team", {}))
    assert raised.value.reason is reasons.MISSING_CONNECTION


class Readers(Secrets):
    """Secrets and ConfigMaps of one namespace."""

    def __init__(self, namespace: str, config_maps: dict[str, dict[str, str]]) -> None:
        super().__init__(namespace, {})
        self.config_maps = config_maps

    async def read_config_map(self, namespace: str, name: str) -> StoredData | None:
        if namespace != self.namespace or name not in self.config_maps:
            return None
        return StoredData(data=self.config_maps[name], labels={})


async def test_ca_bundle_from_config_map(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    operator_bundle = tmp_path / "ca.pem"
    operator_bundle.write_text("OPERATOR PEM")
    config = OperatorConfig(quay_url="https://quay.example.com", token_file=token_file, ca_bundle=operator_bundle)
    readers = Readers("team", {"quay-ca": {"ca.crt": "RESOURCE PEM\n"}})

    own = await resolve_connection(spec(caBundleConfigMapRef={"name": "quay-ca", "key": "ca.crt"}), "team", config, readers)
    assert own.ca_bundle is not None
    assert own.ca_bundle.pem == "RESOURCE PEM"
    assert '"quay-ca"' in own.ca_bundle.source

    default = await resolve_connection(spec(), "team", config, readers)
    assert default.ca_bundle is not None
    assert default.ca_bundle.pem == "OPERATOR PEM"


@pytest.mark.parametrize("config_maps", [{}, {"quay-ca": {}}, {"quay-ca": {"ca.crt": "  "}}])
async def test_missing_ca_config_map_is_reported(tmp_path: Path, config_maps: dict[str, dict[str, str]]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    config = OperatorConfig(quay_url="https://quay.example.com", token_file=token_file)
    reference = {"name": "quay-ca", "key": "ca.crt"}
    with pytest.raises(CredentialsError) as raised:
        await resolve_connection(spec(caBundleConfigMapRef=reference), "team", config, Readers("team", config_maps))
    assert raised.value.reason is reasons.INVALID_CA_BUNDLE


async def test_system_cas_without_bundle(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    config = OperatorConfig(quay_url="https://quay.example.com", token_file=token_file)
    connection = await resolve_connection(spec(), "team", config, Readers("team", {}))
    assert connection.ca_bundle is None
