from __future__ import annotations

import pydantic
import pytest

from quay_tag_operator.controller import invalid_spec_message
from quay_tag_operator.models import RepositoryTagSpec


def message_for(spec: dict[str, object]) -> str:
    with pytest.raises(pydantic.ValidationError) as raised:
        RepositoryTagSpec.model_validate(spec)
    return invalid_spec_message(raised.value)


def test_invalid_spec_message_names_fields_in_plain_words() -> None:
    secret_value = "sha256:SECRET-LOOKING-VALUE"
    message = message_for({"repository": "Bad/Repo/x", "tag": ".x", "manifestDigest": secret_value})
    assert "spec.repository: must be namespace/name" in message
    assert "spec.tag: must be 1 to 128 ASCII letters" in message
    assert "spec.manifestDigest: must be sha256: followed by 64 lower-case hex digits" in message
    assert secret_value not in message
    assert "^" not in message


def test_invalid_spec_message_lists_missing_fields() -> None:
    message = message_for({})
    for field in ("spec.repository", "spec.tag", "spec.manifestDigest"):
        assert f"{field}: Field required" in message
