"""The CRD sets no defaults, because a default that the API server adds shows as drift in Argo CD's diff."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from .conftest import CRD_PATH


def defaults(schema: Any, path: str) -> Iterator[str]:
    """Yield the path of every ``default:`` in an OpenAPI schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "default":
                yield path
            yield from defaults(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from defaults(value, f"{path}[{index}]")


def test_crd_spec_has_no_defaults() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())

    for version in crd["spec"]["versions"]:
        spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert list(defaults(spec_schema, f"{version['name']}.spec")) == []


def test_defaults_finder_finds_nested_default() -> None:
    schema = {"properties": {"suspend": {"type": "boolean", "default": False}}}

    assert list(defaults(schema, "spec")) == ["spec.properties.suspend"]
