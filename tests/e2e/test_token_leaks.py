"""No Quay token ever shows up in logs, Events, status, metrics or error messages.

The operator runs with the `operator` fixture (``--verbose``, so the root logger is at DEBUG
and httpx and httpcore log too). Each scenario uses its own distinctive token and drives one
code path that handles tokens. The paths are the token file, labeled Secrets (one with a
trailing newline), 401, 403, 429, a 500 HTML page that echoes the Authorization header, and a
TLS failure. test_no_token_anywhere then searches every channel for every token, in plain and base64
form. The operator's own log output (runner.output) exists only once the runner stops, so
the module's teardown searches it too.
"""

from __future__ import annotations

import base64
import logging
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kopf.testing import KopfRunner

from quay_tag_testing.controlplane.certs import CertificateAuthority
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

from .conftest import QUAY_NAMESPACE
from .kube import Cluster, digest, ready, ready_with
from .test_tls import server_context

pytestmark = pytest.mark.controlplane


def distinctive(label: str) -> str:
    return f"qto-{label}-{secrets.token_hex(12)}"


FILE_TOKEN = distinctive("file")
SECRET_TOKEN = distinctive("secret")
NEWLINE_TOKEN = distinctive("newline")
WRONG_TOKEN = distinctive("wrong")
READER_TOKEN = distinctive("reader")
RATE_LIMITED_TOKEN = distinctive("ratelimited")
ECHOED_TOKEN = distinctive("echoed")
TOKENS = [FILE_TOKEN, SECRET_TOKEN, NEWLINE_TOKEN, WRONG_TOKEN, READER_TOKEN, RATE_LIMITED_TOKEN, ECHOED_TOKEN]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# The token file must exist before the operator starts, so it is written when the module loads.
TOKEN_FILE = Path(tempfile.mkdtemp(prefix="token-leaks-")) / "token"
TOKEN_FILE.write_text(FILE_TOKEN + "\n")
METRICS_PORT = free_port()
OPERATOR_SETTINGS = {
    "TOKEN_FILE": str(TOKEN_FILE),
    "METRICS_PORT": str(METRICS_PORT),
    "METRICS_ADDRESS": "127.0.0.1",
    # The HTTPS double of the TLS scenario listens on a random port.
    "ALLOWED_HOSTS": "127.0.0.1:*",
}

SEED = {
    "namespaces": [{"name": QUAY_NAMESPACE}],
    "users": [{"name": QUAY_NAMESPACE}, {"name": "reader", "roles": {QUAY_NAMESPACE: "read"}}],
    "tokens": [
        *({"token": token, "user": QUAY_NAMESPACE, "scopes": ["repo:read", "repo:write"]}
          for token in (FILE_TOKEN, SECRET_TOKEN, NEWLINE_TOKEN, RATE_LIMITED_TOKEN, ECHOED_TOKEN)),
        {"token": READER_TOKEN, "user": "reader", "scopes": ["repo:read", "repo:write"]},
    ],
}


class LogCapture(logging.Handler):
    """Keeps every log record of the process, formatted with its traceback, at every level."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.debug_records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if record.levelno == logging.DEBUG:
            self.debug_records += 1


class Holder:
    runner: KopfRunner | None = None


HOLDER = Holder()


@pytest.fixture(scope="module", autouse=True)
def log_capture() -> Iterator[LogCapture]:
    """Capture log records while the operator runs, then search the runner's output once it stopped.

    Being autouse, this fixture starts before the `operator` fixture and ends after it.
    """
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        logging.getLogger().removeHandler(capture)
    if HOLDER.runner is not None:
        assert_no_token(HOLDER.runner.output, "the operator's output (runner.output)")


@pytest.fixture(scope="module")
def quay() -> Iterator[QuayDouble]:
    # Overrides conftest's double, so that the operator fixture uses these tokens too.
    with QuayDouble(SEED) as double:
        yield double


@pytest.fixture
def runner(operator: KopfRunner) -> KopfRunner:
    HOLDER.runner = operator
    return operator


def forms(token: str) -> list[str]:
    # Secrets carry base64; a Secret's body in a log would show this form.
    return [token, base64.b64encode(token.encode()).decode(), base64.b64encode((token + "\n").encode()).decode()]


def assert_no_token(text: str, channel: str) -> None:
    for token in TOKENS:
        for form in forms(token):
            assert form not in text, f"token {token} (as {form}) appears in {channel}"


def token_secret(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"quaytag.dev/token": "true"}},
        "data": {"token": base64.b64encode(value.encode()).decode()},
    }


def with_secret(cluster: Cluster, name: str, value: str) -> dict[str, Any]:
    cluster.apply(token_secret(name, value))
    return {"tokenSecretRef": {"name": name, "key": "token"}}


def seeded(quay: QuayDouble, repository: str) -> str:
    image = digest(repository + "/seed")
    quay.move_tag(repository, "latest", image)
    return image


def test_token_file_syncs(runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    cluster.apply_tag("from-file", repository, "from-file", seeded(quay, repository))
    cluster.wait_for("from-file", ready_with("True", "InSync"))


def test_secret_token_syncs(runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    connection = with_secret(cluster, "quay-token", SECRET_TOKEN)
    cluster.apply_tag("from-secret", repository, "from-secret", seeded(quay, repository), connection=connection)
    cluster.wait_for("from-secret", ready_with("True", "InSync"))


def test_secret_with_trailing_newline_syncs(
    runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str
) -> None:
    connection = with_secret(cluster, "quay-token", NEWLINE_TOKEN + "\n")
    cluster.apply_tag("newline", repository, "newline", seeded(quay, repository), connection=connection)
    cluster.wait_for("newline", ready_with("True", "InSync"))


def test_wrong_token_is_unauthorized(runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    connection = with_secret(cluster, "quay-token", WRONG_TOKEN)
    cluster.apply_tag("wrong", repository, "wrong", seeded(quay, repository), connection=connection)
    cluster.wait_for("wrong", ready_with("False", "Unauthorized"))


def test_reader_token_is_forbidden(runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    connection = with_secret(cluster, "quay-token", READER_TOKEN)
    cluster.apply_tag("reader", repository, "reader", seeded(quay, repository), connection=connection)
    cluster.wait_for("reader", ready_with("False", "Forbidden"))


def test_rate_limit_is_reported(runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str) -> None:
    connection = with_secret(cluster, "quay-token", RATE_LIMITED_TOKEN)
    quay.add_fault(path=f"/repository/{repository}/", status=429, body="<html>slow down</html>",
                   headers={"Retry-After": "junk"})
    try:
        cluster.apply_tag("limited", repository, "limited", seeded(quay, repository), connection=connection)
        cluster.wait_for("limited", ready_with("False", "RateLimited"))
    finally:
        quay.clear_faults()


def test_echoed_token_never_reaches_status(
    runner: KopfRunner, cluster: Cluster, quay: QuayDouble, repository: str
) -> None:
    # A proxy error page that echoes the request's headers, Authorization included.
    page = f"<html><body><h1>500</h1><pre>Authorization: Bearer {ECHOED_TOKEN}</pre></body></html>"
    connection = with_secret(cluster, "quay-token", ECHOED_TOKEN)
    quay.add_fault(path=f"/repository/{repository}/", status=500, body=page, content_type="text/html")
    try:
        cluster.apply_tag("echoed", repository, "echoed", seeded(quay, repository), connection=connection)
        body = cluster.wait_for("echoed", ready_with("False", "QuayUnavailable"))
    finally:
        quay.clear_faults()
    condition = ready(body)
    assert condition is not None
    assert "500" in condition["message"]
    assert ECHOED_TOKEN not in condition["message"]


def test_tls_failure_is_reported(
    runner: KopfRunner, cluster: Cluster, tmp_path: Path
) -> None:
    authority = CertificateAuthority.generate("token leak test CA")
    context = server_context(authority, tmp_path, dns_names=("localhost",), addresses=("127.0.0.1",))
    with QuayDouble(SEED, ssl_context=context) as https_quay:
        # The operator's token file token goes with requests to this server, but TLS fails first.
        cluster.apply_tag("tls", "quayadmin/busybox", "tls", digest("tls"), connection={"url": https_quay.url})
        cluster.wait_for("tls", ready_with("False", "TLSVerificationFailed"))


def test_no_token_anywhere(runner: KopfRunner, control_plane: ControlPlane, log_capture: LogCapture) -> None:
    statuses = control_plane.kubectl("get", "repositorytags", "-A", "-o", "json").stdout
    assert '"reason": "Unauthorized"' in statuses
    assert_no_token(statuses, "RepositoryTag resources")

    events = control_plane.kubectl("get", "events", "-A", "-o", "json").stdout
    assert "TagMoved" in events
    assert_no_token(events, "Events")

    metrics = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics").text
    assert "quay_tag_operator_quay_requests_total" in metrics
    assert_no_token(metrics, "the metrics scrape")

    # DEBUG records of httpx, httpcore and the client were captured and searched too.
    assert log_capture.debug_records > 0
    assert_no_token("\n".join(log_capture.lines), "log records")
