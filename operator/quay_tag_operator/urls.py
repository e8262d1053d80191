"""Quay server URLs: their origin (scheme, host, port), which identifies a server."""

from __future__ import annotations

import urllib.parse
from typing import NamedTuple


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin(url: str) -> Origin:
    """Return the scheme, lower-case host and port of ``url``; raise ValueError when it has none.

    The path is left out: Quay serves its API at /api/v1 of the server's root, so
    two URLs with one origin reach the same server whatever their paths are.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"invalid Quay URL {url!r}: expected http:// or https:// and a host")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError("invalid Quay URL: user information (user@host) is not allowed")
    port = parsed.port  # raises ValueError for a port out of range or not a number
    return Origin(parsed.scheme, parsed.hostname.lower(), port or (443 if parsed.scheme == "https" else 80))
