"""Invalid RepositoryTags are rejected at admission, with the field path in kubectl's error.

The rows come from tests/invalid_specs.py, which tests/unit/test_invalid_specs.py feeds to the
operator's models too. After the CRD and the models were made to agree, no row is admitted by
the CRD and rejected by the models, so the operator's InvalidSpec path has no admitted input
to run on here.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import yaml
from invalid_specs import INVALID_SPECS, VALID_EDGE_SPECS, SpecCase, base_spec

from quay_tag_testing.controlplane.server import ControlPlane

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def admission_namespace(control_plane: ControlPlane, crd: None) -> str:
    # One namespace for the whole table, because namespaces are never deleted in these tests.
    name = f"admission-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    return name


def manifest(name: str, spec: dict[str, Any]) -> str:
    body = {"apiVersion": "quaytag.dev/v1alpha1", "kind": "RepositoryTag", "metadata": {"name": name}, "spec": spec}
    # JSON is valid YAML and keeps every value's type and every character as it is.
    return json.dumps(body)


def apply(plane: ControlPlane, namespace: str, name: str, spec: dict[str, Any], *options: str) -> Any:
    return plane.kubectl("apply", "-n", namespace, *options, "-f", "-", input=manifest(name, spec), check=False)


def test_invalid_table_has_40_rows_or_more() -> None:
    assert len(INVALID_SPECS) >= 40, f"only {len(INVALID_SPECS)} invalid specs"


@pytest.mark.parametrize("case", INVALID_SPECS, ids=lambda case: case.id)
def test_admission_rejects_invalid_spec(control_plane: ControlPlane, admission_namespace: str, case: SpecCase) -> None:
    result = apply(control_plane, admission_namespace, "invalid", case.spec())

    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert f"spec.{case.field}" in result.stderr
    found = control_plane.kubectl("get", "repositorytag", "invalid", "-n", admission_namespace, check=False)
    assert "NotFound" in found.stderr


@pytest.mark.parametrize("case", VALID_EDGE_SPECS, ids=lambda case: case.id)
def test_admission_accepts_edge_spec(control_plane: ControlPlane, admission_namespace: str, case: SpecCase) -> None:
    result = apply(control_plane, admission_namespace, "edge", case.spec(), "--dry-run=server")

    assert result.returncode == 0, result.stderr


def unknown_field_spec() -> dict[str, Any]:
    return {**base_spec(), "unknownField": True}


@pytest.mark.parametrize("options", [(), ("--validate=strict",), ("--server-side",)], ids=["default", "strict", "ssa"])
def test_unknown_field_rejected_by_strict_validation(
    control_plane: ControlPlane, admission_namespace: str, options: tuple[str, ...]
) -> None:
    result = apply(control_plane, admission_namespace, "unknown-strict", unknown_field_spec(), *options)

    assert result.returncode != 0
    # Client-side apply: 'unknown field "spec.unknownField"'; server-side apply: "field not declared in schema".
    assert "spec.unknownField" in result.stderr


@pytest.mark.parametrize("validate", ["warn", "ignore"])
def test_unknown_field_pruned_without_strict_validation(
    control_plane: ControlPlane, admission_namespace: str, validate: str
) -> None:
    name = f"unknown-{validate}"
    result = apply(control_plane, admission_namespace, name, unknown_field_spec(), f"--validate={validate}")

    assert result.returncode == 0, result.stderr
    if validate == "warn":
        assert 'unknown field "spec.unknownField"' in result.stderr
    else:
        assert "unknownField" not in result.stderr
    stored = yaml.safe_load(
        control_plane.kubectl("get", "repositorytag", name, "-n", admission_namespace, "-o", "yaml").stdout
    )
    # The API server prunes the field, so the operator never sees it.
    assert "unknownField" not in stored["spec"]
