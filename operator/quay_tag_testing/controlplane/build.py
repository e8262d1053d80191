"""Build etcd, kube-apiserver and kubectl from the Go module in controlplane/ and cache them.

The binaries are built once per Kubernetes version and go.mod/go.sum content, into a
cache folder outside the repository::

    ${QUAY_TAG_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quay-tag-operator}/
        controlplane/<k8s version>-<first 12 hex digits of sha256(go.mod, go.sum)>/
            etcd  kube-apiserver  kubectl

Run ``python -m quay_tag_testing.controlplane.build`` to build ahead of time; it prints
the folder. Set QUAY_TAG_OPERATOR_CONTROLPLANE_BIN to a folder that already contains
the three binaries to skip the build. The locking, the cache folder and the progress
lines come from quay_tag_testing.gobuild, which builds helm the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import gobuild
from ..gobuild import BuildError as BuildError
from ..gobuild import cache_root as cache_root

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

# Measured with `time python -m quay_tag_testing.controlplane.build`, Go 1.26.8, on a
# 2-core x86_64 container with the Go modules already downloaded: 4 min 34 s with an
# empty Go build cache (GOCACHE), 12 s when every package is cached and only linking runs.
COLD_BUILD_ESTIMATE = "about 5 minutes on 2 cores, plus the module download on a new machine"
WARM_BUILD_ESTIMATE = "about 15 seconds"


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
    version = gobuild.module_version(go_mod, "k8s.io/kubernetes")
    if version is None:
        raise BuildError(
            "go.mod does not require k8s.io/kubernetes, so the Kubernetes version to build is unknown"
        )
    return version


def cache_key(go_mod: bytes, go_sum: bytes) -> str:
    """Return ``<k8s version>-<12 hex digits>``, which changes whenever go.mod or go.sum changes."""
    return gobuild.cache_key(kubernetes_version(go_mod.decode("utf-8")), go_mod, go_sum)


def cache_folder(module_dir: Path = MODULE_DIR, environ: Mapping[str, str] = os.environ) -> Path:
    """Return the folder that contains (or will contain) the binaries for the current go.mod and go.sum."""
    go_mod, go_sum = gobuild.read_module(module_dir, "control plane")
    return cache_root(environ) / "controlplane" / cache_key(go_mod, go_sum)


def control_plane_build(module_dir: Path = MODULE_DIR) -> gobuild.GoBuild:
    """Describe the build of etcd, kube-apiserver and kubectl from the Go module in ``module_dir``."""
    go_mod, _ = gobuild.read_module(module_dir, "control plane")
    version = kubernetes_version(go_mod.decode("utf-8"))
    return gobuild.GoBuild(
        label="controlplane",
        module_dir=module_dir,
        packages=TOOLS,
        version=version,
        linker_flags=_linker_flags(version),
        bin_env=BIN_ENV,
        cold_build_estimate=COLD_BUILD_ESTIMATE,
        warm_build_estimate=WARM_BUILD_ESTIMATE,
    )


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
    gobuild.ensure_built(control_plane_build(), folder)
    return Binaries.in_folder(folder)


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


def main() -> None:
    try:
        binaries = ensure_binaries()
    except BuildError as error:
        sys.exit(f"error: {error}")
    print(binaries.etcd.parent)


if __name__ == "__main__":
    main()
