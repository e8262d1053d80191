"""The spec model on the same invalid and borderline specs that the admission test applies.

tests/e2e/test_invalid_resources.py applies these tables to the API server; here they go to
``RepositoryTagSpec`` and the operator's InvalidSpec message. Both must reject the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from invalid_specs import INVALID_SPECS, VALID_EDGE_SPECS, SpecCase, base_spec

from quay_tag_operator import models
from quay_tag_operator.controller import invalid_spec_message
from quay_tag_operator.models import RepositoryTagSpec

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "repositorytags.quaytag.dev.yaml"


def error_locations(error: pydantic.ValidationError) -> list[str]:
    return [".".join(str(part) for part in detail["loc"]) for detail in error.errors()]


def test_invalid_table_has_40_rows_or_more() -> None:
    ids = [case.id for case in INVALID_SPECS]
    assert len(ids) >= 40, f"only {len(ids)} invalid specs"
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", INVALID_SPECS, ids=lambda case: case.id)
def test_model_rejects_invalid_spec(case: SpecCase) -> None:
    # Any exception other than ValidationError fails the test, as it would crash the pass.
    with pytest.raises(pydantic.ValidationError) as raised:
        RepositoryTagSpec.model_validate(case.spec())
    assert case.field in error_locations(raised.value)


@pytest.mark.parametrize("case", INVALID_SPECS, ids=lambda case: case.id)
def test_invalid_spec_message_names_field(case: SpecCase) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        RepositoryTagSpec.model_validate(case.spec())
    message = invalid_spec_message(raised.value)
    assert f"spec.{case.field}: " in message
    # A pattern mismatch is described in words, never as the regular expression.
    assert "should match pattern" not in message
    assert "^" not in message
    assert message.endswith("Fix the resource; the operator waits for the change.")


@pytest.mark.parametrize("case", VALID_EDGE_SPECS, ids=lambda case: case.id)
def test_model_accepts_edge_spec(case: SpecCase) -> None:
    spec = RepositoryTagSpec.model_validate(case.spec())
    assert spec.manifest_digest == base_spec()["manifestDigest"]


def crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        (("repository",), models.REPOSITORY_PATTERN),
        (("tag",), models.TAG_PATTERN),
        (("manifestDigest",), models.DIGEST_PATTERN),
        (("refreshInterval",), models.DURATION_PATTERN),
        (("expiration",), models.RFC3339_PATTERN),
        (("connection", "url"), models.URL_PATTERN),
        (("connection", "tokenSecretRef", "name"), models.OBJECT_NAME_PATTERN),
        (("connection", "caBundleConfigMapRef", "name"), models.OBJECT_NAME_PATTERN),
    ],
)
def test_crd_and_model_share_pattern(path: tuple[str, ...], pattern: str) -> None:
    schema = crd_spec_schema()
    for name in path:
        schema = schema["properties"][name]
    assert schema["pattern"] == pattern


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
spec_keys = st.sampled_from(
    ["repository", "tag", "manifestDigest", "connection", "refreshInterval", "deletionPolicy", "expiration", "suspend"]
)
key_refs = json_values | st.fixed_dictionaries({}, optional={"name": json_values, "key": json_values})
connections = st.fixed_dictionaries(
    {},
    optional={
        "url": st.text(max_size=60) | st.from_regex(models.URL_PATTERN, fullmatch=True) | json_values,
        "tokenSecretRef": key_refs,
        "caBundleConfigMapRef": key_refs,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(spec_keys, json_values, min_size=1, max_size=4),
    connection=st.none() | connections,
)
def test_model_raises_only_validation_errors(changes: dict[str, Any], connection: dict[str, Any] | None) -> None:
    spec = {**base_spec(), **changes}
    if connection is not None:
        spec["connection"] = connection
    try:
        RepositoryTagSpec.model_validate(spec)
    except pydantic.ValidationError as error:
        message = invalid_spec_message(error)
        assert message.startswith("Invalid spec: spec.")
