"""TLS to Quay: verification against a CA the test generates, per resource or not at all."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from quay_tag_testing.controlplane.certs import CertificateAuthority
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import SEED
from .kube import Cluster, digest, ready, ready_with

pytestmark = pytest.mark.controlplane

REPOSITORY = "quayadmin/secure"
# The HTTPS doubles listen on random ports of 127.0.0.1.
OPERATOR_SETTINGS = {"ALLOWED_HOSTS": "127.0.0.1:*"}


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.generate("quay-tag-operator TLS test CA")


@pytest.fixture(scope="module")
def https_quay(authority: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuayDouble]:
    context = server_context(authority, tmp_path_factory.mktemp("tls"), dns_names=("localhost",), addresses=("127.0.0.1",))
    with QuayDouble(SEED, ssl_context=context) as double:
        image = digest("secure")
        double.add_manifest(REPOSITORY, image)
        double.move_tag(REPOSITORY, "latest", image)
        yield double


def server_context(
    authority: CertificateAuthority, folder: Path, *, dns_names: tuple[str, ...], addresses: tuple[str, ...]
) -> ssl.SSLContext:
    """Return a server TLS context with a certificate that ``authority`` issued for these names."""
    serving = authority.issue_serving_certificate(dns_names=dns_names, ip_addresses=addresses)
    serving.write(folder / "tls.crt", folder / "tls.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    return context


def ca_config_map(name: str, pem: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"ca.crt": pem}}


def test_own_ca_bundle_verifies_quay(cluster: Cluster, https_quay: QuayDouble, authority: CertificateAuthority) -> None:
    assert https_quay.url.startswith("https://127.0.0.1:")
    cluster.apply(ca_config_map("quay-ca", authority.cert_pem.decode()))
    connection = {"url": https_quay.url, "caBundleConfigMapRef": {"name": "quay-ca", "key": "ca.crt"}}
    cluster.apply_tag("secure", REPOSITORY, "pinned", digest("secure"), connection=connection)
    cluster.wait_for("secure", ready_with("True", "InSync"))
    assert https_quay.alive_digest(REPOSITORY, "pinned") == digest("secure")


def test_unknown_ca_fails_verification(cluster: Cluster, https_quay: QuayDouble) -> None:
    other = CertificateAuthority.generate("some other CA")
    cluster.apply(ca_config_map("other-ca", other.cert_pem.decode()))
    connection = {"url": https_quay.url, "caBundleConfigMapRef": {"name": "other-ca", "key": "ca.crt"}}
    cluster.apply_tag("wrong-ca", REPOSITORY, "wrong-ca", digest("secure"), connection=connection)
    body = cluster.wait_for("wrong-ca", ready_with("False", "TLSVerificationFailed"))
    condition = ready(body)
    assert condition is not None
    assert "certificate" in condition["message"]
    assert https_quay.alive_digest(REPOSITORY, "wrong-ca") is None


def test_system_cas_reject_test_certificate(cluster: Cluster, https_quay: QuayDouble) -> None:
    cluster.apply_tag("system-ca", REPOSITORY, "system-ca", digest("secure"), connection={"url": https_quay.url})
    cluster.wait_for("system-ca", ready_with("False", "TLSVerificationFailed"))


def test_garbage_ca_bundle_is_reported(cluster: Cluster, https_quay: QuayDouble) -> None:
    cluster.apply(ca_config_map("garbage-ca", "this is not a certificate"))
    connection = {"url": https_quay.url, "caBundleConfigMapRef": {"name": "garbage-ca", "key": "ca.crt"}}
    cluster.apply_tag("garbage-ca", REPOSITORY, "garbage-ca", digest("secure"), connection=connection)
    body = cluster.wait_for("garbage-ca", ready_with("False", "InvalidCABundle"))
    condition = ready(body)
    assert condition is not None
    assert '"garbage-ca"' in condition["message"]


def test_certificate_for_other_host_fails(
    cluster: Cluster, authority: CertificateAuthority, tmp_path: Path
) -> None:
    # A certificate for another name, served on 127.0.0.1: a host name mismatch.
    context = server_context(authority, tmp_path, dns_names=("quay.other.example",), addresses=())
    with QuayDouble(SEED, ssl_context=context) as double:
        double.add_manifest(REPOSITORY, digest("secure"))
        double.move_tag(REPOSITORY, "latest", digest("secure"))
        cluster.apply(ca_config_map("right-ca", authority.cert_pem.decode()))
        connection = {"url": double.url, "caBundleConfigMapRef": {"name": "right-ca", "key": "ca.crt"}}
        cluster.apply_tag("mismatch", REPOSITORY, "mismatch", digest("secure"), connection=connection)
        body = cluster.wait_for("mismatch", ready_with("False", "TLSVerificationFailed"))
        condition = ready(body)
        assert condition is not None
        assert "127.0.0.1" in condition["message"]
