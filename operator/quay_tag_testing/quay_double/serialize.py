"""Serialize tag history rows the way Quay's ``_tag_dict`` does."""

from __future__ import annotations

from email.utils import formatdate

from .errors import JSONValue
from .model import Manifest, TagPage, TagRow


def format_rfc2822(epoch_seconds: int) -> str:
    """Format Unix seconds as Quay's format_date does, such as "Tue, 21 May 2024 20:41:09 -0000"."""
    return formatdate(epoch_seconds)


def serialize_row(row: TagRow, manifest: Manifest) -> dict[str, JSONValue]:
    """Return one history row with Quay's keys, in Quay's order.

    ``end_ts`` is absent while the row has no end. ``expiration`` is present whenever
    an end exists: a scheduled expiry on an alive row, or the time of the move or
    delete on a dead row. Quay reports times in whole seconds, rounded down.
    """
    start_ts = row.start_ms // 1000
    end_ts = row.end_ms // 1000 if row.end_ms is not None else None

    data: dict[str, JSONValue] = {"name": row.name, "reversion": row.reversion}
    if start_ts > 0:
        data["start_ts"] = start_ts
    if end_ts is not None and end_ts > 0:
        data["end_ts"] = end_ts
    data["manifest_digest"] = row.manifest_digest
    data["is_manifest_list"] = manifest.is_manifest_list
    data["size"] = manifest.size
    if start_ts > 0:
        data["last_modified"] = format_rfc2822(start_ts)
    if end_ts is not None:
        data["expiration"] = format_rfc2822(end_ts)
    return data


def serialize_page(page: TagPage) -> dict[str, JSONValue]:
    tags: list[JSONValue] = [serialize_row(row, manifest) for row, manifest in page.rows]
    return {"tags": tags, "page": page.page, "has_additional": page.has_additional}
