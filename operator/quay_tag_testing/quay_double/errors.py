"""The one exception type of the Quay API double, and builders for Quay's error bodies.

Quay sends two kinds of error body. Its own API errors (``endpoints/exception.py``
upstream) are JSON objects with ``detail``, ``error_message``, ``error_type``, ``title``,
``type`` and ``status``. Errors raised through Flask or flask-restful (a bad tag name,
a bad query argument, 415, 503) are JSON objects with a single ``message`` key. The
message strings below are Quay's and Werkzeug's own, so that clients can be tested
against the exact text.
"""

from __future__ import annotations

from typing import Union

JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]

JSON_CONTENT_TYPE = "application/json"

# Quay builds ``type`` with Flask's url_for(_external=True), so it is an absolute URL.
# The builders store the path, and the server prefixes the request's scheme and host.
ERROR_TYPE_PATH = "/api/v1/error/"

BAD_REQUEST_MESSAGE = "The browser (or proxy) sent a request that this server could not understand."
UNSUPPORTED_MEDIA_TYPE_MESSAGE = (
    "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
)
URL_NOT_FOUND_MESSAGE = (
    "The requested URL was not found on the server. If you entered the URL manually please "
    "check your spelling and try again."
)
METHOD_NOT_ALLOWED_MESSAGE = "The method is not allowed for the requested URL."
TAG_NAME_MESSAGE = (
    'Invalid tag: must match [A-Za-z0-9_.-], NOT start with "." or "-", '
    "and can contain 1-128 characters"
)
# The missing space before "can" is in Quay's message.
FILTER_SYNTAX_MESSAGE = (
    "Unsupported syntax for filter_tag_name. Expected <operation>:<tag_name> where <operation>"
    "can be 'like' or 'eq'."
)


class QuayError(Exception):
    """An HTTP error response: status, body and content type.

    Everything the double rejects raises this type, and the server turns it into a
    response in one place. A JSON content type means ``body`` is serialized as JSON.
    Any other content type requires ``body`` to be a string, sent as it is.
    """

    def __init__(
        self,
        status: int,
        body: JSONValue,
        content_type: str = JSON_CONTENT_TYPE,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})


def api_error(status: int, error_type: str, detail: str) -> QuayError:
    """Build one of Quay's own API errors, with its keys in Quay's order."""
    body: dict[str, JSONValue] = {
        "detail": detail,
        "error_message": detail,
        "error_type": error_type,
        "title": error_type,
        "type": ERROR_TYPE_PATH + error_type,
        "status": status,
    }
    return QuayError(status, body)


def framework_error(status: int, message: JSONValue) -> QuayError:
    """Build an error as Flask or flask-restful sends it: a JSON object with only ``message``."""
    return QuayError(status, {"message": message})


def not_found() -> QuayError:
    return api_error(404, "not_found", "Not Found")


def invalid_request(detail: str) -> QuayError:
    return api_error(400, "invalid_request", detail)


def requires_authentication() -> QuayError:
    """Quay's ``Unauthorized`` when no user could be loaded from the request."""
    return api_error(401, "invalid_token", "Requires authentication")


def insufficient_scope() -> QuayError:
    """Quay's ``Unauthorized`` for a known user who lacks the permission."""
    return api_error(403, "insufficient_scope", "Unauthorized")


def tag_immutable(tag: str) -> QuayError:
    # NOTE: the detail text is a guess. Quay's tests for immutable tags pin only the
    # status, error_type and title.
    return api_error(409, "tag_immutable", f"Tag {tag} is immutable")
