"""Build the main packages of a pinned Go module once, and cache the executables by version.

The test tools (the local control plane, helm) are built from Go modules in the repository,
each in a folder of its own under one cache folder outside the repository::

    ${QUAY_TAG_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quay-tag-operator}/
        <label>/<version>-<first 12 hex digits of sha256(go.mod, go.sum)>/

A file lock beside each folder lets concurrent test runs share one build. The build goes
into a temporary folder that is renamed into place, so a cache folder is always complete.
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

from .controlplane.process import kill_when_parent_exits

CACHE_ENV = "QUAY_TAG_OPERATOR_CACHE"

# Seconds between two progress lines while `go build` runs.
PROGRESS_INTERVAL = 30.0


class BuildError(RuntimeError):
    """The executables could not be found or built."""


@dataclass(frozen=True)
class GoBuild:
    """One `go build` of main packages from a Go module in the repository."""

    # Cache subfolder and the prefix of progress lines, such as "controlplane".
    label: str
    module_dir: Path
    # Import path of each main package -> (file name that `go build -o DIR` gives it, file name in
    # the cache).
    packages: Mapping[str, tuple[str, str]]
    # The version that names the cache folder and the progress lines, such as "v1.37.2".
    version: str
    linker_flags: str
    # Environment variable that names a folder with the executables, skipping the build.
    bin_env: str
    # Shown while building, such as "about 5 minutes on 2 cores".
    cold_build_estimate: str
    warm_build_estimate: str

    @property
    def executable_names(self) -> list[str]:
        return [cached_name for _, cached_name in self.packages.values()]


def module_version(go_mod: str, module: str) -> str | None:
    """Return the version of ``module`` that go.mod requires, such as ``v1.37.2``, or None."""
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)"
    match = re.search(pattern, go_mod, re.MULTILINE)
    return match.group(1) if match else None


def cache_key(version: str, go_mod: bytes, go_sum: bytes) -> str:
    """Return ``<version>-<12 hex digits>``, which changes whenever go.mod or go.sum changes."""
    digest = hashlib.sha256()
    # Length prefixes keep the two files apart, so moving bytes from one to the other
    # changes the digest.
    for content in (go_mod, go_sum):
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    return f"{version}-{digest.hexdigest()[:12]}"


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the project's cache folder from QUAY_TAG_OPERATOR_CACHE, XDG_CACHE_HOME or ~/.cache."""
    explicit = environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(environ.get("HOME", str(Path.home()))) / ".cache"
    return base / "quay-tag-operator"


def read_module(module_dir: Path, description: str) -> tuple[bytes, bytes]:
    """Return the contents of go.mod and go.sum in ``module_dir``. Errors name the module by ``description``."""
    try:
        return (module_dir / "go.mod").read_bytes(), (module_dir / "go.sum").read_bytes()
    except FileNotFoundError as error:
        raise BuildError(
            f"{error.filename} not found: the {description} Go module must be in {module_dir}, "
            "so install the project from a repository checkout (pip install -e)"
        ) from error


def missing_executables(folder: Path, names: list[str]) -> list[Path]:
    """Return the paths in ``folder`` among ``names`` that are not executable files."""
    paths = [folder / name for name in names]
    return [path for path in paths if not (path.is_file() and os.access(path, os.X_OK))]


def check_bin_folder(bin_env: str, folder: Path, names: list[str]) -> None:
    """Raise BuildError unless ``folder``, which the variable ``bin_env`` names, contains every executable."""
    missing = missing_executables(folder, names)
    if missing:
        paths = ", ".join(str(path) for path in missing)
        raise BuildError(
            f"{bin_env}={folder} is missing executable files: {paths}. "
            f"Put {_join_names(names)} there, or unset it to build them."
        )


def ensure_built(build: GoBuild, folder: Path) -> None:
    """Build ``build``'s executables into ``folder`` unless they are there already.

    Progress goes to stderr because a first build takes minutes.
    """
    if not missing_executables(folder, build.executable_names):
        return

    folder.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder.parent / f"{folder.name}.lock", build.label):
        # Another process may have finished the build while this one waited for the lock.
        if not missing_executables(folder, build.executable_names):
            return
        _build_into(folder, build)


@contextlib.contextmanager
def _build_lock(path: Path, label: str) -> Iterator[None]:
    with path.open("a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _report(label, f"waiting for another process that holds {path} and builds {label}")
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _build_into(folder: Path, build: GoBuild) -> None:
    """Build into a temporary folder beside `folder`, then rename it into place.

    The caller holds the build lock, so leftovers of earlier interrupted builds can go.
    """
    go = shutil.which("go")
    if go is None:
        names = _join_names(build.executable_names)
        raise BuildError(
            "the `go` command was not found on PATH. Install Go (the version in "
            f"{build.module_dir / 'go.mod'}) or set {build.bin_env} to a folder with {names}"
        )

    partial_prefix = f".{folder.name}.partial-"
    for leftover in folder.parent.glob(partial_prefix + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if folder.exists():
        # Renaming is atomic, so an existing but incomplete folder was edited by hand.
        shutil.rmtree(folder)

    partial = Path(tempfile.mkdtemp(prefix=partial_prefix, dir=folder.parent))
    try:
        _run_go_build(go, partial, build)
        for built_name, cached_name in build.packages.values():
            if built_name != cached_name:
                (partial / built_name).rename(partial / cached_name)
        missing = missing_executables(partial, build.executable_names)
        if missing:
            raise BuildError(f"go build finished but did not produce {', '.join(map(str, missing))}")
        # mkdtemp creates the folder with mode 0700, and a cache folder gets the usual 0755.
        partial.chmod(0o755)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _run_go_build(go: str, output_dir: Path, build: GoBuild) -> None:
    packages = list(build.packages)
    names = _join_names(build.executable_names)
    _report(build.label, f"building {names} {build.version} from {build.module_dir} into {output_dir.parent}")
    # `go list` downloads missing modules first, which can take a while on its own.
    total = _count_packages(go, packages, build.module_dir)
    _report(
        build.label,
        f"{total} Go packages: the first build takes {build.cold_build_estimate}; later builds reuse "
        f"Go's build cache, skip the packages in it and take {build.warm_build_estimate}",
    )

    command = [
        go,
        "build",
        "-trimpath",
        f"-ldflags={build.linker_flags}",
        "-v",
        "-o",
        f"{output_dir}/",
        *packages,
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=build.module_dir,
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
                _report(build.label, f"still building after {elapsed:.0f} s: {compiled} of {total} packages compiled")
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
    _report(build.label, f"built in {elapsed:.0f} s ({compiled} packages compiled)")


def _count_packages(go: str, packages: list[str], module_dir: Path) -> int:
    result = subprocess.run(
        [go, "list", "-deps", *packages],
        cwd=module_dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"`go list -deps` failed in {module_dir}:\n{result.stderr.strip()}")
    return len(result.stdout.split())


def _join_names(names: list[str]) -> str:
    """Return ``a, b and c`` for messages."""
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _report(label: str, message: str) -> None:
    # sys.stderr is looked up on each call because pytest swaps it while capturing.
    print(f"[{label}] {message}", file=sys.stderr, flush=True)
