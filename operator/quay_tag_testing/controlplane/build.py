"""Build etcd, kube-apiserver and kubectl from the Go module in controlplane/ and cache them.

The binaries are built once per Kubernetes version and go.mod/go.sum content, into a
cache folder outside the repository::

    ${QUAY_TAG_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quay-tag-operator}/
        controlplane/<k8s version>-<first 12 hex digits of sha256(go.mod, go.sum)>/
            etcd  kube-apiserver  kubectl

Run ``python -m quay_tag_testing.controlplane.build`` to build ahead of time; it prints
the folder. Set QUAY_TAG_OPERATOR_CONTROLPLANE_BIN to a folder that already contains
the three binaries to skip the build.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .process import kill_when_parent_exits

CACHE_ENV = "QUAY_TAG_OPERATOR_CACHE"
BIN_ENV = "QUAY_TAG_OPERATOR_CONTROLPLANE_BIN"

# The Go module that pins the control plane sources, at the repository root.
MODULE_DIR = Path(__file__).resolve().parents[3] / "controlplane"

# Import paths of the main packages, as listed in the `tool` block of go.mod, and the
# file name each binary gets in the cache folder. `go build -o DIR` names a binary
# after the last import path element without a major-version suffix, so etcd's
# go.etcd.io/etcd/server/v3 comes out as `server`.
TOOLS = {
    "go.etcd.io/etcd/server/v3": ("server", "etcd"),
    "k8s.io/kubernetes/cmd/kube-apiserver": ("kube-apiserver", "kube-apiserver"),
    "k8s.io/kubernetes/cmd/kubectl": ("kubectl", "kubectl"),
}

# Seconds between two progress lines while `go build` runs.
PROGRESS_INTERVAL = 30.0

# Measured with `time python -m quay_tag_testing.controlplane.build`, Go 1.26.8, on a
# 2-core x86_64 container with the Go modules already downloaded: 4 min 34 s with an
# empty Go build cache (GOCACHE), 12 s when every package is cached and only linking runs.
COLD_BUILD_ESTIMATE = "about 5 minutes on 2 cores, plus the module download on a new machine"
WARM_BUILD_ESTIMATE = "about 15 seconds"


class BuildError(RuntimeError):
    """The control plane binaries could not be found or built."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the three control plane executables."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path

    @classmethod
    def in_folder(cls, folder: Path) -> Binaries:
        return cls(
            etcd=folder / "etcd",
            kube_apiserver=folder / "kube-apiserver",
            kubectl=folder / "kubectl",
        )

    def missing(self) -> list[Path]:
        """Return the paths that are not executable files."""
        paths = [self.etcd, self.kube_apiserver, self.kubectl]
        return [path for path in paths if not (path.is_file() and os.access(path, os.X_OK))]


def kubernetes_version(go_mod: str) -> str:
    """Return the k8s.io/kubernetes version that go.mod requires, such as ``v1.37.2``."""
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", go_mod, re.MULTILINE)
    if match is None:
        raise BuildError(
            "go.mod does not require k8s.io/kubernetes, so the Kubernetes version to build is unknown"
        )
    return match.group(1)


def cache_key(go_mod: bytes, go_sum: bytes) -> str:
    """Return ``<k8s version>-<12 hex digits>``, which changes whenever go.mod or go.sum changes."""
    digest = hashlib.sha256()
    # Length prefixes keep the two files apart, so moving bytes from one to the other
    # changes the digest.
    for content in (go_mod, go_sum):
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    version = kubernetes_version(go_mod.decode("utf-8"))
    return f"{version}-{digest.hexdigest()[:12]}"


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the project's cache folder from QUAY_TAG_OPERATOR_CACHE, XDG_CACHE_HOME or ~/.cache."""
    explicit = environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(environ.get("HOME", str(Path.home()))) / ".cache"
    return base / "quay-tag-operator"


def cache_folder(module_dir: Path = MODULE_DIR, environ: Mapping[str, str] = os.environ) -> Path:
    """Return the folder that contains (or will contain) the binaries for the current go.mod and go.sum."""
    try:
        go_mod = (module_dir / "go.mod").read_bytes()
        go_sum = (module_dir / "go.sum").read_bytes()
    except FileNotFoundError as error:
        raise BuildError(
            f"{error.filename} not found: the control plane Go module must be in {module_dir}, "
            "so install the project from a repository checkout (pip install -e)"
        ) from error
    return cache_root(environ) / "controlplane" / cache_key(go_mod, go_sum)


def ensure_binaries() -> Binaries:
    """Build the control plane binaries on first use and return their paths.

    Progress goes to stderr because the first build takes minutes.
    """
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        binaries = Binaries.in_folder(Path(explicit))
        missing = binaries.missing()
        if missing:
            names = ", ".join(str(path) for path in missing)
            raise BuildError(
                f"{BIN_ENV}={explicit} is missing executable files: {names}. "
                "Put etcd, kube-apiserver and kubectl there, or unset it to build them."
            )
        return binaries

    folder = cache_folder()
    binaries = Binaries.in_folder(folder)
    if not binaries.missing():
        return binaries

    folder.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder.parent / f"{folder.name}.lock"):
        # Another process may have finished the build while this one waited for the lock.
        if not binaries.missing():
            return binaries
        _build_into(folder, kubernetes_version((MODULE_DIR / "go.mod").read_text()))
    return binaries


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    with path.open("a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _report(f"waiting for another process that holds {path} and builds the control plane")
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _build_into(folder: Path, version: str) -> None:
    """Build into a temporary folder beside `folder`, then rename it into place.

    The caller holds the build lock, so leftovers of earlier interrupted builds can go.
    """
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the `go` command was not found on PATH. Install Go (the version in "
            f"{MODULE_DIR / 'go.mod'}) or set {BIN_ENV} to a folder with etcd, kube-apiserver and kubectl"
        )

    partial_prefix = f".{folder.name}.partial-"
    for leftover in folder.parent.glob(partial_prefix + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if folder.exists():
        # Renaming is atomic, so an existing but incomplete folder was edited by hand.
        shutil.rmtree(folder)

    partial = Path(tempfile.mkdtemp(prefix=partial_prefix, dir=folder.parent))
    try:
        _run_go_build(go, partial, version)
        for built_name, cached_name in TOOLS.values():
            (partial / built_name).rename(partial / cached_name)
        missing = Binaries.in_folder(partial).missing()
        if missing:
            raise BuildError(f"go build finished but did not produce {', '.join(map(str, missing))}")
        # mkdtemp creates the folder with mode 0700, and a cache folder gets the usual 0755.
        partial.chmod(0o755)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _run_go_build(go: str, output_dir: Path, version: str) -> None:
    packages = list(TOOLS)
    _report(f"building etcd, kube-apiserver and kubectl {version} from {MODULE_DIR} into {output_dir.parent}")
    # `go list` downloads missing modules first, which can take a while on its own.
    total = _count_packages(go, packages)
    _report(
        f"{total} Go packages: the first build takes {COLD_BUILD_ESTIMATE}; later builds reuse "
        f"Go's build cache, skip the packages in it and take {WARM_BUILD_ESTIMATE}"
    )

    command = [
        go,
        "build",
        "-trimpath",
        f"-ldflags={_linker_flags(version)}",
        "-v",
        "-o",
        f"{output_dir}/",
        *packages,
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=MODULE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A `go build` left running after Python dies would race the next build.
        preexec_fn=kill_when_parent_exits,
    )
    assert process.stdout is not None
    compiled = 0
    # `go build -v` prints one import path per compiled package, and compiler errors
    # after a `# package` line. The last lines are kept for the error message.
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def read_output() -> None:
        nonlocal compiled
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if line and not line.startswith("#") and " " not in line:
                compiled += 1

    reader = threading.Thread(target=read_output, name="go-build-output", daemon=True)
    reader.start()
    try:
        while True:
            try:
                process.wait(timeout=PROGRESS_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                _report(f"still building after {elapsed:.0f} s: {compiled} of {total} packages compiled")
    except BaseException:
        process.kill()
        process.wait()
        raise
    reader.join()

    elapsed = time.monotonic() - started
    if process.returncode != 0:
        output = "\n".join(tail)
        raise BuildError(
            f"`{' '.join(command)}` failed with exit code {process.returncode} after {elapsed:.0f} s:\n{output}"
        )
    _report(f"built in {elapsed:.0f} s ({compiled} packages compiled)")


def _linker_flags(version: str) -> str:
    """Return flags that strip debug data and stamp the Kubernetes version into the binaries.

    Without the stamp, kube-apiserver's /version and `kubectl version` report
    v0.0.0-master. The stamp changes only the link step, so Go's build cache still
    serves every compiled package. The linker ignores -X for etcd, which lacks the variables.
    """
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    # component-base's copy is served at /version and printed by `kubectl version`.
    # client-go's copy goes into the User-Agent header.
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _count_packages(go: str, packages: list[str]) -> int:
    result = subprocess.run(
        [go, "list", "-deps", *packages],
        cwd=MODULE_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"`go list -deps` failed in {MODULE_DIR}:\n{result.stderr.strip()}")
    return len(result.stdout.split())


def _report(message: str) -> None:
    # sys.stderr is looked up on each call because pytest swaps it while capturing.
    print(f"[controlplane] {message}", file=sys.stderr, flush=True)


def main() -> None:
    try:
        binaries = ensure_binaries()
    except BuildError as error:
        sys.exit(f"error: {error}")
    print(binaries.etcd.parent)


if __name__ == "__main__":
    main()
