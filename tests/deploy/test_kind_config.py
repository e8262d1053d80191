"""kind-config.yaml at the repository root: a one-node kind cluster to try the install on.

kind itself does not run in the tests, because it needs a container engine.
"""

from __future__ import annotations

import re

import yaml

from .conftest import ROOT

KIND_CONFIG = ROOT / "kind-config.yaml"


def test_kind_config_is_cluster() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())

    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"


def test_kind_config_has_one_control_plane() -> None:
    nodes = yaml.safe_load(KIND_CONFIG.read_text())["nodes"]

    assert [node["role"] for node in nodes] == ["control-plane"]


def test_kind_node_image_pinned_by_digest() -> None:
    node = yaml.safe_load(KIND_CONFIG.read_text())["nodes"][0]

    # kind v0.33.0's release notes state that only the digest guarantees an image built for that release.
    assert re.fullmatch(r"kindest/node:v1\.37\.\d+@sha256:[0-9a-f]{64}", node["image"]), node["image"]
