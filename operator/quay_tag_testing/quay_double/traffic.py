"""Fault injection, added latency and the request log of the double's Quay API routes.

None of this touches the ``/__double__/`` admin routes, so a test can always reach
the admin API to clear a fault it injected.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import JSONValue


class FaultRule(BaseModel):
    """A canned response for the Quay API requests that match ``method`` and ``path``.

    A rule with a ``status`` sends its response in place of the double's. With ``body_delay``
    it sends the headers and the first half of the body, then waits before the rest. A rule
    with ``drop`` closes the connection without any response. A rule with neither only adds
    its ``delay`` and lets the double handle the request. With ``response_delay`` it then
    delays the response, after the double has applied the request. The first matching rule in the order of
    addition applies, and it is removed after ``count`` uses, or kept until cleared
    when ``count`` is None.
    """

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(default=None, description="HTTP method to match. None matches every method.")
    path: str = Field(default=".*", description="Regular expression searched for in the request path.")
    status: int | None = Field(default=None, ge=100, le=599)
    body: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="Response body. A string is sent as it is, and other values as JSON."
    )
    content_type: str | None = Field(
        default=None, description="Defaults to application/json for JSON bodies and text/html otherwise."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers, such as Retry-After.")
    delay: float = Field(default=0.0, ge=0, description="Seconds to wait before responding or dropping the connection.")
    drop: bool = False
    body_delay: float = Field(
        default=0.0,
        ge=0,
        description="Seconds to wait between the first half of the body and the rest. Needs a status.",
    )
    response_delay: float = Field(
        default=0.0,
        ge=0,
        description="Seconds to hold the double's own response after it handled the request, so that a "
        "write has already taken effect. Not allowed with status or drop.",
    )
    count: int | None = Field(
        default=None, ge=1, description="Number of requests the rule applies to. None means until cleared."
    )

    @field_validator("method")
    @classmethod
    def _normalize_method(cls, method: str | None) -> str | None:
        return method.upper() if method is not None else None

    @field_validator("path")
    @classmethod
    def _check_path_pattern(cls, path: str) -> str:
        try:
            re.compile(path)
        except re.error as error:
            raise ValueError(f"invalid regular expression {path!r}: {error}") from None
        return path

    @model_validator(mode="after")
    def _check_drop_alone(self) -> FaultRule:
        if self.drop and (self.status is not None or self.body is not None or self.headers or self.content_type):
            raise ValueError(
                "a rule with drop=true sends no response, so it cannot set status, body, headers or content_type"
            )
        if self.status is None and (self.body is not None or self.headers or self.content_type or self.body_delay):
            raise ValueError("body, headers, content_type and body_delay need a status")
        if self.response_delay and (self.status is not None or self.drop):
            raise ValueError("response_delay delays the double's own response, so it is invalid with status or drop")
        return self

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return re.search(self.path, path) is not None

    def response_content_type(self) -> str:
        if self.content_type is not None:
            return self.content_type
        if isinstance(self.body, (dict, list)):
            return "application/json"
        return "text/html"


@dataclass(frozen=True)
class RequestRecord:
    """One Quay API request as the double received it.

    ``status`` is None while the request is in flight and for a dropped connection.
    ``fault`` is true when a fault rule with a status or ``drop`` decided the outcome.
    ``received`` is the double's ``time.monotonic()`` when the request arrived, in seconds.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    fault: bool
    received: float = 0.0

    def to_json(self) -> dict[str, JSONValue]:
        query: dict[str, JSONValue] = dict(self.query)
        return {
            "method": self.method,
            "path": self.path,
            "query": query,
            "status": self.status,
            "fault": self.fault,
            "received": self.received,
        }


@dataclass
class _LoggedRequest:
    id: int
    record: RequestRecord


@dataclass
class _ActiveFault:
    id: int
    rule: FaultRule
    remaining: int | None


class TrafficControl:
    """Thread-safe store of fault rules, the added latency and the request log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_ActiveFault] = []
        self._next_fault_id = 1
        self._latency = 0.0
        self._requests: list[_LoggedRequest] = []
        self._next_request_id = 1
        self._in_flight = 0
        self._peak_in_flight = 0

    def add_fault(self, rule: FaultRule | Mapping[str, Any]) -> int:
        """Add a fault rule after the existing ones and return its id."""
        parsed = rule if isinstance(rule, FaultRule) else FaultRule.model_validate(rule)
        with self._lock:
            fault = _ActiveFault(self._next_fault_id, parsed, parsed.count)
            self._next_fault_id += 1
            self._faults.append(fault)
            return fault.id

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, JSONValue]]:
        with self._lock:
            return [
                {"id": fault.id, "remaining": fault.remaining, "rule": fault.rule.model_dump(mode="json")}
                for fault in self._faults
            ]

    def take_fault(self, method: str, path: str) -> FaultRule | None:
        """Return the first rule matching the request and count one use of it."""
        with self._lock:
            for fault in self._faults:
                if not fault.rule.matches(method, path):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault.rule
            return None

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def set_latency(self, seconds: float) -> None:
        """Set the seconds added before every Quay API response. Zero turns it off."""
        if seconds < 0:
            raise ValueError(f"latency must not be negative, got {seconds}")
        with self._lock:
            self._latency = seconds

    def begin_request(self, method: str, path: str, query: Mapping[str, str]) -> int:
        """Log a request on arrival and return its id for ``finish_request``."""
        with self._lock:
            request_id = self._next_request_id
            self._next_request_id += 1
            self._requests.append(_LoggedRequest(request_id, RequestRecord(method, path, dict(query), None, False, time.monotonic())))
            return request_id

    def finish_request(self, request_id: int, status: int | None, fault: bool = False) -> None:
        """Store the outcome of a logged request. A request dropped from the log by a reset is skipped."""
        with self._lock:
            for logged in reversed(self._requests):
                if logged.id == request_id:
                    logged.record = dataclasses.replace(logged.record, status=status, fault=fault)
                    return

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return [logged.record for logged in self._requests]

    def request_counts(self) -> dict[str, int]:
        """Return the number of logged requests for each HTTP method."""
        with self._lock:
            return dict(Counter(logged.record.method for logged in self._requests))

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._peak_in_flight = self._in_flight

    def enter(self) -> None:
        """Count a Quay API request that has arrived and has no response yet."""
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def peak_concurrency(self) -> int:
        """Return the most Quay API requests in flight at once since the last reset."""
        with self._lock:
            return self._peak_in_flight
