"""A local Kubernetes control plane: etcd and kube-apiserver on 127.0.0.1, without nodes.

There is no kube-controller-manager, so nothing runs the controllers that act on
stored objects: deleted namespaces stay in Terminating, Deployments get no Pods and
no service account or token is created for a namespace. The API, its validation,
admission, RBAC and watches behave as in a cluster.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from .build import Binaries, ensure_binaries
from .certs import ADMIN_GROUPS, ADMIN_USER, CertificateAuthority, ServiceAccountKeyPair
from .kubeconfig import render_kubeconfig, write_kubeconfig_file
from .process import ManagedProcess, ProcessError

logger = logging.getLogger(__name__)

# Services get addresses from this range, but no proxy routes them and nothing
# connects to them, so it only has to be a valid private range.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

# Seconds between readiness probes while a process starts.
POLL_INTERVAL = 0.2


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited with a non-zero code. The message includes kubectl's stderr."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        return f"{super().__str__()}\n{stderr}" if stderr else super().__str__()


class ControlPlane:
    """etcd and kube-apiserver in a temporary folder, with an admin kubeconfig.

    Use it as a context manager, or call start() and stop(). Both processes run in
    their own process groups, get SIGKILL on Linux when the thread that started them
    exits, and are stopped by an atexit handler if stop() was never called.
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
    ) -> None:
        """Prepare a control plane. start() calls ensure_binaries() when `binaries` is None.

        `start_timeout` bounds the wait for each process to become ready and
        `stop_timeout` the wait after SIGTERM before SIGKILL, both in seconds.
        """
        self._binaries = binaries
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._workdir: Path | None = None
        self._ca: CertificateAuthority | None = None
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._etcd_url = ""
        self._server_url = ""
        self._owner_pid = os.getpid()

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Paths and addresses, valid between start() and stop().

    def _require_started(self) -> None:
        if self._workdir is None:
            raise RuntimeError("the control plane is not started; call start() first")

    @property
    def workdir(self) -> Path:
        """Temporary folder with certificates, etcd data and logs, removed by stop()."""
        self._require_started()
        assert self._workdir is not None
        return self._workdir

    @property
    def kubeconfig_path(self) -> Path:
        """Kubeconfig of the `admin` user in group system:masters."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_path(self) -> Path:
        """PEM file of the CA that signed the serving certificate and all client certificates."""
        return self.workdir / "pki" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def server_url(self) -> str:
        """kube-apiserver URL, such as ``https://127.0.0.1:40123``."""
        self._require_started()
        return self._server_url

    @property
    def etcd_url(self) -> str:
        self._require_started()
        return self._etcd_url

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            raise RuntimeError("the control plane is not started; call start() first")
        return self._binaries

    @property
    def certificate_authority(self) -> CertificateAuthority:
        """The CA that kube-apiserver trusts for client certificates."""
        if self._ca is None:
            raise RuntimeError("the control plane is not started; call start() first")
        return self._ca

    # Lifecycle.

    def start(self) -> None:
        """Start etcd and kube-apiserver and wait until kube-apiserver reports /readyz."""
        if self._workdir is not None:
            raise RuntimeError(f"the control plane is already running at {self._server_url}")
        started = time.monotonic()
        if self._binaries is None:
            self._binaries = ensure_binaries()

        self._workdir = Path(tempfile.mkdtemp(prefix="quay-tag-controlplane-"))
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        try:
            self._write_certificates()
            self.log_dir.mkdir()
            etcd_client_port, etcd_peer_port, apiserver_port = _free_ports(3)
            self._etcd_url = f"http://127.0.0.1:{etcd_client_port}"
            self._server_url = f"https://127.0.0.1:{apiserver_port}"

            self._etcd = ManagedProcess(
                "etcd", self._etcd_command(etcd_peer_port), self.log_dir / "etcd.log"
            )
            self._etcd.start()
            self._wait_until_ready(self._etcd, self._probe_etcd)

            self._apiserver = ManagedProcess(
                "kube-apiserver", self._apiserver_command(apiserver_port), self.log_dir / "kube-apiserver.log"
            )
            self._apiserver.start()
            self._wait_until_ready(self._apiserver, self._probe_apiserver)

            admin = self.certificate_authority.issue_client_certificate(ADMIN_USER, ADMIN_GROUPS)
            write_kubeconfig_file(
                self.kubeconfig_path,
                render_kubeconfig(self._server_url, self.certificate_authority.cert_pem, ADMIN_USER, admin),
            )
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Control plane ready at %s in %.1f s (work folder %s)",
            self._server_url,
            time.monotonic() - started,
            self._workdir,
        )

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and remove the work folder. Safe to call twice."""
        atexit.unregister(self._stop_at_exit)
        # kube-apiserver goes first so it does not log a burst of etcd connection errors.
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop(self.stop_timeout)
        self._apiserver = None
        self._etcd = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            logger.info("Control plane at %s stopped", self._server_url)
        self._workdir = None
        self._ca = None

    def _stop_at_exit(self) -> None:
        # A forked child inherits atexit handlers, and must not stop its parent's servers.
        if os.getpid() == self._owner_pid:
            self.stop()

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port with the same etcd and certificates."""
        apiserver = self._apiserver
        if apiserver is None:
            raise RuntimeError("the control plane is not started; call start() first")
        apiserver.stop(self.stop_timeout)
        apiserver.start()
        self._wait_until_ready(apiserver, self._probe_apiserver)

    # Clients.

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the admin kubeconfig, or with `kubeconfig`, and capture its output.

        Raises KubectlError for a non-zero exit code when `check` is true.
        """
        command = [
            str(self.binaries.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig_path}",
            # The discovery cache goes into the work folder, because in ~/.kube/cache every
            # port would add a folder.
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def write_kubeconfig(self, path: Path | str, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig that authenticates as `user` in `groups` with a new client certificate."""
        client = self.certificate_authority.issue_client_certificate(user, groups)
        path = Path(path)
        content = render_kubeconfig(self.server_url, self.certificate_authority.cert_pem, user, client)
        write_kubeconfig_file(path, content)
        return path

    # Start-up details.

    def _write_certificates(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir()
        self._ca = CertificateAuthority.generate()
        self.ca_path.write_bytes(self._ca.cert_pem)
        self._ca.issue_serving_certificate().write(pki / "apiserver.crt", pki / "apiserver.key")
        # The readiness probe authenticates with this certificate. Kubeconfigs get their own.
        self._ca.issue_client_certificate(ADMIN_USER, ADMIN_GROUPS).write(pki / "probe.crt", pki / "probe.key")
        ServiceAccountKeyPair.generate().write(pki / "service-account.key", pki / "service-account.pub")

    def _etcd_command(self, peer_port: int) -> list[str]:
        peer_url = f"http://127.0.0.1:{peer_port}"
        return [
            str(self.binaries.etcd),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd-data'}",
            f"--listen-client-urls={self._etcd_url}",
            f"--advertise-client-urls={self._etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Test data need not survive a power loss, and fsync dominates write latency.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_command(self, port: int) -> list[str]:
        pki = self.workdir / "pki"
        return [
            str(self.binaries.kube_apiserver),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--etcd-servers={self._etcd_url}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_path}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self._server_url}",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The ServiceAccount admission plugin rejects Pods in namespaces without a
            # `default` service account, and only kube-controller-manager creates it.
            "--disable-admission-plugins=ServiceAccount",
            # The lease reconciler publishes the advertise address as the endpoint of the
            # `kubernetes` Service and, in 1.37, exits at start when that address is
            # loopback. Nothing here reaches kube-apiserver through that Service.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    def _wait_until_ready(self, process: ManagedProcess, probe: Callable[[], str | None]) -> None:
        """Poll `probe` (None when ready, else the reason) until ready, exit or timeout."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not process.is_running():
                raise ProcessError(
                    f"{process.name} exited with code {process.exit_code()} while starting. "
                    f"Last lines of {process.log_path}:\n{process.log_tail()}"
                )
            problem = probe()
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{process.name} timed out after {self.start_timeout:.0f} s waiting for readiness "
                    f"({problem}). Last lines of {process.log_path}:\n{process.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def _probe_etcd(self) -> str | None:
        try:
            response = httpx.get(f"{self._etcd_url}/health", timeout=2.0)
        except httpx.TransportError as error:
            return f"GET /health failed: {error!r}"
        if response.status_code == 200 and response.json().get("health") == "true":
            return None
        return f"GET /health returned {response.status_code}: {response.text.strip()[:200]}"

    def _probe_apiserver(self) -> str | None:
        pki = self.workdir / "pki"
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(pki / "probe.crt", pki / "probe.key")
        try:
            response = httpx.get(f"{self._server_url}/readyz", verify=context, timeout=5.0)
        except httpx.TransportError as error:
            return f"GET /readyz failed: {error!r}"
        if response.status_code == 200:
            return None
        # The body lists the checks that are still failing, one per line.
        failing = [line for line in response.text.splitlines() if "failed" in line]
        return f"GET /readyz returned {response.status_code}: {'; '.join(failing) or response.text.strip()[:200]}"


def _free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports that were free on 127.0.0.1 a moment ago.

    NOTE: another process may bind a port between this check and the server's start,
    or between the stop and start of restart_apiserver(). The start then fails with
    "address already in use" in the log tail.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
