"""Build helm from the Go module in tools/helm/ and cache it, for the tests of the Helm chart.

helm is a test tool only: the operator never runs it. It is built once per helm version and
go.mod/go.sum content, in the same way and under the same cache folder as the control plane::

    ${QUAY_TAG_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quay-tag-operator}/
        helm/<helm version>-<first 12 hex digits of sha256(go.mod, go.sum)>/helm

Run ``python -m quay_tag_testing.helm`` to build ahead of time; it prints the path of the
executable. Set QUAY_TAG_OPERATOR_HELM_BIN to a folder that already contains ``helm`` to skip
the build.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from . import gobuild
from .gobuild import BuildError

BIN_ENV = "QUAY_TAG_OPERATOR_HELM_BIN"

# A Go module of its own, so that helm's dependencies never change the versions that
# controlplane/go.mod pins.
MODULE_DIR = Path(__file__).resolve().parents[2] / "tools" / "helm"

HELM_MODULE = "helm.sh/helm/v4"
PACKAGES = {f"{HELM_MODULE}/cmd/helm": ("helm", "helm")}

# Measured on a 2-core x86_64 container with Go 1.26.8, while other builds shared the CPUs
# (load average 3.5 to 4.4). With an empty module cache (GOMODCACHE) and an empty build cache
# (GOCACHE), `go build` took 4 s to download the modules and 140 s to compile 1,183 packages.
# `time python -m quay_tag_testing.helm` took 176 s with the control plane's packages in the
# build cache, and 5 s when every package was cached and only linking ran.
COLD_BUILD_ESTIMATE = "about 3 minutes on 2 cores, plus the module download on a new machine"
WARM_BUILD_ESTIMATE = "about 5 seconds"


def helm_version(go_mod: str) -> str:
    """Return the helm.sh/helm/v4 version that go.mod requires, such as ``v4.3.2``."""
    version = gobuild.module_version(go_mod, HELM_MODULE)
    if version is None:
        raise BuildError(f"go.mod does not require {HELM_MODULE}, so the helm version to build is unknown")
    return version


def cache_folder(module_dir: Path = MODULE_DIR, environ: Mapping[str, str] = os.environ) -> Path:
    """Return the folder that contains (or will contain) helm for the current go.mod and go.sum."""
    go_mod, go_sum = gobuild.read_module(module_dir, "helm")
    key = gobuild.cache_key(helm_version(go_mod.decode("utf-8")), go_mod, go_sum)
    return gobuild.cache_root(environ) / "helm" / key


def helm_build(module_dir: Path = MODULE_DIR) -> gobuild.GoBuild:
    """Describe the build of helm from the Go module in ``module_dir``."""
    go_mod, _ = gobuild.read_module(module_dir, "helm")
    version = helm_version(go_mod.decode("utf-8"))
    return gobuild.GoBuild(
        label="helm",
        module_dir=module_dir,
        packages=PACKAGES,
        version=version,
        linker_flags=_linker_flags(version),
        bin_env=BIN_ENV,
        cold_build_estimate=COLD_BUILD_ESTIMATE,
        warm_build_estimate=WARM_BUILD_ESTIMATE,
    )


def ensure_helm() -> Path:
    """Build helm on first use and return the path of the executable.

    Progress goes to stderr because the first build takes minutes.
    """
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        gobuild.check_bin_folder(BIN_ENV, Path(explicit), ["helm"])
        return Path(explicit) / "helm"

    folder = cache_folder()
    gobuild.ensure_built(helm_build(), folder)
    return folder / "helm"


def _linker_flags(version: str) -> str:
    """Return flags that strip debug data and stamp the version into helm.

    Without the stamp, `helm version` reports only the minor version that the sources
    hard-code, such as v4.3. The variables are the ones helm's own Makefile sets.
    """
    package = f"{HELM_MODULE}/internal/version"
    return " ".join(["-s", "-w", f"-X {package}.version={version}", f"-X {package}.gitTreeState=clean"])


def main() -> None:
    try:
        helm = ensure_helm()
    except BuildError as error:
        sys.exit(f"error: {error}")
    print(helm)


if __name__ == "__main__":
    main()
