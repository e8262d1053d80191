"""Parse the query arguments and JSON bodies of Quay's tag endpoints, raising Quay's errors.

Quay parses query arguments with flask-restful's reqparse and validates bodies with
jsonschema against the small schemas in ``endpoints/api/tag.py``. The functions here
raise the same statuses and messages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import (
    BAD_REQUEST_MESSAGE,
    UNSUPPORTED_MEDIA_TYPE_MESSAGE,
    JSONValue,
    framework_error,
    invalid_request,
)
from .model import MISSING, Missing, TagQuery

# reqparse rejects a bad argument with a message that contains the argument's help text,
# keyed by the argument's name.
_LIMIT_HELP = "Limit to the number of results to return per page. Max 100."
_PAGE_HELP = "Page index for the results. Default 1."

# The values that Quay's truthy_bool reads as false. Everything else is true.
_FALSE_VALUES = frozenset(["false", "False", "0", "FALSE", "", "null"])

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class ChangeTagBody:
    """The keys of a PUT body that Quay acts on. Absent keys are MISSING."""

    expiration: float | None | Missing = MISSING
    manifest_digest: str | None | Missing = MISSING


def parse_tag_query(arguments: Mapping[str, str]) -> TagQuery:
    """Parse the list endpoint's arguments, clamping ``limit`` into 1..100 and ``page`` to 1 or more.

    ``arguments`` maps each name to its first value. reqparse checks the arguments in
    the reverse order of Quay's decorators, so a bad ``page`` is reported before a
    bad ``limit``.
    """
    only_active_tags = arguments.get("onlyActiveTags", "false") not in _FALSE_VALUES
    page = _parse_int_argument(arguments, "page", default=1, help_text=_PAGE_HELP)
    limit = _parse_int_argument(arguments, "limit", default=DEFAULT_LIMIT, help_text=_LIMIT_HELP)
    return TagQuery(
        page=max(1, page),
        limit=min(MAX_LIMIT, max(1, limit)),
        specific_tag=arguments.get("specificTag") or None,
        filter_tag_name=arguments.get("filter_tag_name") or None,
        only_active_tags=only_active_tags,
    )


def parse_truthy_bool(value: str | None) -> bool:
    return value is not None and value not in _FALSE_VALUES


def parse_json_body(content_type: str | None, raw_body: bytes) -> JSONValue:
    """Decode a request body as Flask's ``request.get_json()`` does inside Quay.

    Raises 415 unless the media type is JSON, 400 for undecodable JSON, and
    ``invalid_request`` for a body that is the JSON literal null.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    is_json = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    if not is_json:
        raise framework_error(415, UNSUPPORTED_MEDIA_TYPE_MESSAGE)

    try:
        value: JSONValue = json.loads(raw_body)
    except ValueError:
        raise framework_error(400, BAD_REQUEST_MESSAGE) from None
    if value is None:
        raise invalid_request("Missing JSON body")
    return value


def parse_change_tag_body(body: JSONValue) -> ChangeTagBody:
    """Validate a PUT body against Quay's ChangeTag schema and return the keys it uses."""
    fields = _require_object(body)
    manifest_digest: str | None | Missing = MISSING
    expiration: float | None | Missing = MISSING

    if "manifest_digest" in fields:
        value = fields["manifest_digest"]
        if value is not None and not isinstance(value, str):
            raise _type_error(value, "string", "null")
        manifest_digest = value

    if "expiration" in fields:
        value = fields["expiration"]
        if value is not None and not _is_json_number(value):
            raise _type_error(value, "number", "null")
        expiration = _to_float(value) if value is not None else None

    return ChangeTagBody(expiration=expiration, manifest_digest=manifest_digest)


def parse_restore_body(body: JSONValue) -> str | None:
    """Validate a restore body against Quay's RestoreTag schema and return ``manifest_digest``.

    A missing key returns None, and the caller raises Quay's 400 for it once the
    repository is known to exist.
    """
    fields = _require_object(body)
    value = fields.get("manifest_digest")
    if "manifest_digest" in fields and not isinstance(value, str):
        raise _type_error(value, "string")
    return value if isinstance(value, str) else None


def _parse_int_argument(arguments: Mapping[str, str], name: str, default: int, help_text: str) -> int:
    if name not in arguments:
        return default
    try:
        return int(arguments[name])
    except ValueError:
        raise framework_error(400, {name: help_text}) from None


def _require_object(body: JSONValue) -> dict[str, JSONValue]:
    if not isinstance(body, dict):
        raise _type_error(body, "object")
    return body


def _is_json_number(value: JSONValue) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_float(value: JSONValue) -> float:
    assert isinstance(value, (int, float))
    try:
        return float(value)
    except OverflowError:
        # An integer beyond the float range is as unusable as an infinite expiration.
        return math.inf


def _type_error(value: JSONValue, *types: str) -> Exception:
    # NOTE: jsonschema's full message continues with the failing schema and instance
    # paths on further lines. Only its first line is reproduced here.
    type_names = ", ".join(repr(type_name) for type_name in types)
    return invalid_request(f"{value!r} is not of type {type_names}")
