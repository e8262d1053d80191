"""Payloads of Quay's tag API (GET /api/v1/repository/{ns}/{repo}/tag/).

Parsing is lenient: newer Quay releases add fields (``immutable``, counts of
manifest-list children and more), so unknown keys are ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Unix seconds that datetime can convert (years 1970 to 9999); other values are not Quay's.
Timestamp = Annotated[int, Field(ge=0, le=253_402_300_799)]


class TagRow(BaseModel):
    """One row of a tag's history: the span of time a tag pointed at one manifest."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    reversion: bool = False
    # Epoch seconds. end_ts is absent while the row is alive, in the future when
    # an alive row has a scheduled expiration, and in the past once it ended.
    start_ts: Timestamp
    end_ts: Timestamp | None = None
    manifest_digest: str
    is_manifest_list: bool = False
    size: int | None = None
    last_modified: str | None = None
    expiration: str | None = None

    def is_alive(self, now: float) -> bool:
        return self.end_ts is None or self.end_ts > now

    @property
    def identity(self) -> tuple[str, int, str, bool]:
        """Key that stays the same when the row is listed again on a later page.

        end_ts is left out because it changes when the tag moves between page reads.
        """
        return (self.name, self.start_ts, self.manifest_digest, self.reversion)


class TagPage(BaseModel):
    """One page of the tag list."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tags: list[TagRow]
    page: int
    has_additional: bool = False


class TagHistory(BaseModel):
    """The rows of one tag, newest first, without the duplicates that paging can produce."""

    model_config = ConfigDict(frozen=True)

    rows: tuple[TagRow, ...]
    # False when reading stopped before the last page because the caller had what it needed.
    complete: bool = True

    def alive_row(self, now: float) -> TagRow | None:
        for row in self.rows:
            if row.is_alive(now):
                return row
        return None

    def contains_digest(self, digest: str) -> bool:
        return any(row.manifest_digest == digest for row in self.rows)
