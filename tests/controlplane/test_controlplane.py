from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes
import pytest

from quay_tag_testing.controlplane import build
from quay_tag_testing.controlplane.build import BuildError, cache_folder, cache_key, cache_root
from quay_tag_testing.controlplane.server import ControlPlane, KubectlError

GO_MOD = b"module example\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.37.2\n"
GO_SUM = b"k8s.io/kubernetes v1.37.2 h1:aaaa=\n"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass, and return whether it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def unique_user(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# Cache key and folder: unit tests, no build.


def test_cache_key_starts_with_version() -> None:
    key = cache_key(GO_MOD, GO_SUM)

    assert key.startswith("v1.37.2-")
    assert len(key.removeprefix("v1.37.2-")) == 12


def test_cache_key_stable_for_same_input() -> None:
    assert cache_key(GO_MOD, GO_SUM) == cache_key(GO_MOD, GO_SUM)


def test_cache_key_changes_with_go_sum() -> None:
    changed_sum = GO_SUM + b"k8s.io/api v0.37.2 h1:bbbb=\n"

    assert cache_key(GO_MOD, GO_SUM) != cache_key(GO_MOD, changed_sum)


def test_cache_key_changes_with_go_mod() -> None:
    changed_mod = GO_MOD + b"\nreplace k8s.io/api => k8s.io/api v0.37.2\n"

    assert cache_key(GO_MOD, GO_SUM) != cache_key(changed_mod, GO_SUM)


def test_cache_key_separates_the_two_files() -> None:
    # The same bytes split differently between go.mod and go.sum give another key.
    assert cache_key(GO_MOD + b"x", GO_SUM) != cache_key(GO_MOD, b"x" + GO_SUM)


def test_cache_key_reads_version_from_block() -> None:
    go_mod = b"module example\n\nrequire (\n\tk8s.io/kubernetes v1.38.0\n\tk8s.io/api v0.38.0\n)\n"

    assert cache_key(go_mod, GO_SUM).startswith("v1.38.0-")


def test_cache_key_rejects_go_mod_without_kubernetes() -> None:
    with pytest.raises(BuildError, match="k8s.io/kubernetes"):
        cache_key(b"module example\n", GO_SUM)


def test_cache_root_precedence() -> None:
    home = {"HOME": "/home/user"}
    xdg = {**home, "XDG_CACHE_HOME": "/xdg"}
    explicit = {**xdg, "QUAY_TAG_OPERATOR_CACHE": "/explicit"}

    assert cache_root(home) == Path("/home/user/.cache/quay-tag-operator")
    assert cache_root(xdg) == Path("/xdg/quay-tag-operator")
    assert cache_root(explicit) == Path("/explicit")


def test_cache_folder_follows_go_sum(tmp_path: Path) -> None:
    module = tmp_path / "module"
    module.mkdir()
    (module / "go.mod").write_bytes(GO_MOD)
    (module / "go.sum").write_bytes(GO_SUM)
    environ = {"QUAY_TAG_OPERATOR_CACHE": str(tmp_path / "cache")}

    before = cache_folder(module, environ)
    (module / "go.sum").write_bytes(GO_SUM + b"extra h1:cccc=\n")
    after = cache_folder(module, environ)

    assert before.parent == tmp_path / "cache" / "controlplane"
    assert before.name == cache_key(GO_MOD, GO_SUM)
    assert after != before


def test_bin_folder_without_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAY_TAG_OPERATOR_CONTROLPLANE_BIN", str(tmp_path))

    with pytest.raises(BuildError, match="kube-apiserver"):
        build.ensure_binaries()


def test_bin_folder_with_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("etcd", "kube-apiserver", "kubectl"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("QUAY_TAG_OPERATOR_CONTROLPLANE_BIN", str(tmp_path))

    binaries = build.ensure_binaries()

    assert binaries.kube_apiserver == tmp_path / "kube-apiserver"


def test_build_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUAY_TAG_OPERATOR_CONTROLPLANE_BIN", raising=False)
    monkeypatch.setenv("QUAY_TAG_OPERATOR_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(BuildError, match="`go` command was not found"):
        build.ensure_binaries()

    # A failed build leaves no partial folder behind.
    leftovers = [path.name for path in (tmp_path / "controlplane").iterdir() if not path.name.endswith(".lock")]
    assert leftovers == []


# A running control plane.


@pytest.mark.controlplane
def test_readyz_through_kubectl(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("get", "--raw", "/readyz")

    assert result.stdout.strip() == "ok"


@pytest.mark.controlplane
def test_server_version_matches_go_mod(control_plane: ControlPlane) -> None:
    expected = build.kubernetes_version((build.MODULE_DIR / "go.mod").read_text())

    result = control_plane.kubectl("version", "--output=json")
    versions = json.loads(result.stdout)

    assert versions["serverVersion"]["gitVersion"] == expected
    assert versions["clientVersion"]["gitVersion"] == expected


@pytest.mark.controlplane
def test_kubeconfig_env_for_python_client(control_plane: ControlPlane) -> None:
    assert os.environ["KUBECONFIG"] == str(control_plane.kubeconfig_path)

    api_client = kubernetes.config.new_client_from_config()  # type: ignore[no-untyped-call]
    try:
        namespace = kubernetes.client.CoreV1Api(api_client).read_namespace("default")
    finally:
        api_client.close()

    assert namespace.metadata is not None
    assert namespace.metadata.name == "default"


@pytest.mark.controlplane
def test_namespace_fixture_creates_namespace(control_plane: ControlPlane, namespace: str) -> None:
    result = control_plane.kubectl("get", "namespace", namespace, "--output=jsonpath={.status.phase}")

    assert result.stdout == "Active"


@pytest.mark.controlplane
def test_kubectl_error_includes_stderr(control_plane: ControlPlane) -> None:
    with pytest.raises(KubectlError, match="NotFound|not found"):
        control_plane.kubectl("get", "namespace", "does-not-exist")


@pytest.mark.controlplane
def test_kubeconfig_for_other_identity(control_plane: ControlPlane, tmp_path: Path) -> None:
    user = unique_user("whoami")
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "user.kubeconfig", user, ["quay-readers", "qa"])

    result = control_plane.kubectl("auth", "whoami", "--output=json", kubeconfig=kubeconfig)
    user_info = json.loads(result.stdout)["status"]["userInfo"]

    assert user_info["username"] == user
    assert "quay-readers" in user_info["groups"]
    assert "qa" in user_info["groups"]
    assert "system:authenticated" in user_info["groups"]
    assert "system:masters" not in user_info["groups"]
    assert kubeconfig.stat().st_mode & 0o077 == 0


@pytest.mark.controlplane
def test_rbac_forbids_until_role_binding(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    user = unique_user("reader")
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "reader.kubeconfig", user)

    def list_secrets() -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)

    denied = list_secrets()
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "{user}" cannot list resource "secrets"' in denied.stderr

    control_plane.kubectl("create", "role", "secret-reader", "--verb=get,list", "--resource=secrets", "-n", namespace)
    control_plane.kubectl("create", "rolebinding", "reader", "--role=secret-reader", f"--user={user}", "-n", namespace)

    # The RBAC authorizer reads bindings from a watch cache, so a grant shows up after a moment.
    assert wait_for(lambda: list_secrets().returncode == 0), list_secrets().stderr


@pytest.mark.controlplane
def test_rbac_binding_to_group(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    group = unique_user("group")
    member = control_plane.write_kubeconfig(tmp_path / "member.kubeconfig", unique_user("member"), [group])
    outsider = control_plane.write_kubeconfig(tmp_path / "outsider.kubeconfig", unique_user("outsider"), ["other"])

    control_plane.kubectl("create", "role", "secret-reader", "--verb=list", "--resource=secrets", "-n", namespace)
    control_plane.kubectl("create", "rolebinding", "readers", "--role=secret-reader", f"--group={group}", "-n", namespace)

    def can_list(kubeconfig: Path) -> bool:
        result = control_plane.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
        return result.returncode == 0

    assert wait_for(lambda: can_list(member))
    assert not can_list(outsider)


@pytest.mark.controlplane
def test_restart_apiserver_keeps_data(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    user = unique_user("restart")
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "user.kubeconfig", user)
    control_plane.kubectl("create", "configmap", "before-restart", "--from-literal=key=value", "-n", namespace)
    server_url = control_plane.server_url

    control_plane.restart_apiserver()

    value = control_plane.kubectl(
        "get", "configmap", "before-restart", "-n", namespace, "--output=jsonpath={.data.key}"
    ).stdout
    assert value == "value"
    assert control_plane.server_url == server_url
    # Client certificates issued before the restart are still trusted.
    whoami = control_plane.kubectl("auth", "whoami", "--output=json", kubeconfig=kubeconfig)
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == user


# Separate control planes, to check start-up and shutdown.


def process_is_alive(pid: int) -> bool:
    """Return whether `pid` is running. A zombie counts as ended, because only its parent can reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.controlplane
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_stop_ends_processes_and_removes_workdir(control_plane: ControlPlane) -> None:
    plane = ControlPlane(control_plane.binaries)
    with plane:
        assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        workdir = plane.workdir
        pids = [process.pid for process in (plane._etcd, plane._apiserver) if process is not None]
        assert len(pids) == 2

    assert not workdir.exists()
    for pid in pids:
        assert pid is not None
        assert not process_is_alive(pid)


@pytest.mark.controlplane
@pytest.mark.skipif(sys.platform != "linux", reason="relies on PR_SET_PDEATHSIG and /proc")
def test_processes_end_when_python_is_killed(control_plane: ControlPlane) -> None:
    script = textwrap.dedent(
        """
        import json, time
        from quay_tag_testing.controlplane.server import ControlPlane
        plane = ControlPlane()
        plane.start()
        print(json.dumps({"pids": [plane._etcd.pid, plane._apiserver.pid], "workdir": str(plane.workdir)}), flush=True)
        time.sleep(600)
        """
    )
    environ = {**os.environ, "QUAY_TAG_OPERATOR_CONTROLPLANE_BIN": str(control_plane.binaries.etcd.parent)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environ)
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
    finally:
        # SIGKILL skips atexit, so only the kernel's parent-death signal can stop the servers.
        child.send_signal(signal.SIGKILL)
        child.wait()

    try:
        for pid in started["pids"]:
            assert wait_for(lambda: not process_is_alive(pid)), f"pid {pid} outlived its parent"
    finally:
        shutil.rmtree(started["workdir"], ignore_errors=True)
