"""Prometheus metrics of the operator, served on --metrics-port when it is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PASSES = Counter(
    "quay_tag_operator_passes_total",
    "Reconcile passes, by the Ready reason they ended with.",
    ["reason"],
)
QUAY_REQUESTS = Counter(
    "quay_tag_operator_quay_requests_total",
    "Requests to Quay, by HTTP method and status code (error: no response).",
    ["method", "status"],
)
QUAY_REQUEST_SECONDS = Histogram(
    "quay_tag_operator_quay_request_duration_seconds",
    "Duration of requests to Quay, including reading the body.",
    ["method"],
)
DRIFT_CORRECTIONS = Counter(
    "quay_tag_operator_drift_corrections_total",
    "Tags moved back after someone moved them outside the operator.",
)
RATE_LIMITED = Counter(
    "quay_tag_operator_rate_limited_total",
    "Quay answers with status 429 (rate limited).",
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "quay_tag_operator_rate_limit_wait_seconds",
    "Seconds that requests waited for the operator's own limit of requests per second to a Quay server.",
)
SHARED_CHECKS = Counter(
    "quay_tag_operator_shared_checks_total",
    "Periodic checks of the subscribed tags of one repository, by how the tags were read "
    "(list: the repository's alive tags; tags: each tag; failed: reading failed).",
    ["mode"],
)
RESOURCES = Gauge(
    "quay_tag_operator_resources",
    "RepositoryTags the operator handles, by the Ready reason of their last pass.",
    ["reason"],
)


def serve(port: int, address: str) -> None:
    """Serve /metrics from a background thread of the operator's process."""
    start_http_server(port, addr=address)


def record_reason(previous: str | None, current: str) -> None:
    """Move one resource from its previous Ready reason to the current one in the RESOURCES gauge."""
    if previous == current:
        return
    if previous is not None:
        RESOURCES.labels(reason=previous).dec()
    RESOURCES.labels(reason=current).inc()


def forget_resource(reason: str | None) -> None:
    if reason is not None:
        RESOURCES.labels(reason=reason).dec()
