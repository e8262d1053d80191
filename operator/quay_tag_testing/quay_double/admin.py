"""Admin API of the Quay double, for tests and demos. It has no authentication.

All routes take and return JSON. A rejected call returns ``{"error": MESSAGE}`` with
400 for an invalid body or value and 404 for an unknown repository, manifest or tag.
Unknown keys in a body are rejected, so a typo fails loudly.

``GET /__double__/state``
    The whole registry: ``now_ms``, ``namespaces``, ``users`` and ``repositories``.
    Each repository lists its ``manifests`` and its tag rows with ``start_ms``,
    ``end_ms``, ``reversion``, ``immutable``, ``hidden`` and ``alive``.
``POST /__double__/manifests``
    ``{"repository": "ns/name", "digest": "sha256:...", "size": 123,
    "is_manifest_list": false, "children": []}`` stores a manifest, creating the
    repository if needed. Only ``repository`` and ``digest`` are required. Returns 201
    and ``{"manifest": {...}}``.
``POST /__double__/tags``
    ``{"repository": "ns/name", "tag": "latest", "digest": "sha256:..."}`` moves or
    creates a tag by hand, as a push or a mirror sync would: the alive row ends and a
    new row starts. It bypasses authentication, the repository state and immutability.
    Returns 201 and ``{"row": {...}}`` with the new row in Quay's format.
``POST /__double__/tags/immutable``
    ``{"repository": "ns/name", "tag": "latest", "immutable": true}`` marks the alive
    row of a tag immutable or mutable.
``POST /__double__/repositories/{namespace}/{repository}/state``
    ``{"state": "NORMAL" | "READ_ONLY" | "MIRROR"}`` sets the repository state.
``POST /__double__/clock``
    ``{"seconds": 3600}`` advances the clock and returns ``{"now_ms": ...}``.
``POST /__double__/gc``
    Runs garbage collection and returns ``{"removed_rows": N, "removed_manifests":
    ["ns/name@sha256:...", ...]}``.
``GET /__double__/requests``
    The log of Quay API requests, ``{"requests": [{"method", "path", "query",
    "status", "fault", "received"}, ...], "counts": {"GET": N, ...}}``. ``status`` is
    null while a request is in flight and for a dropped connection. ``received`` is the
    double's monotonic clock in seconds when the request arrived.
``DELETE /__double__/requests``
    Empties the request log. Returns 204.
``GET /__double__/faults``
    The active fault rules with their ids and remaining uses.
``POST /__double__/faults``
    Adds a fault rule for the Quay API routes and returns 201 and ``{"id": N}``.
    The body has the fields of :class:`FaultRule`: ``method``, ``path`` (a regex
    searched in the request path), ``status``, ``body``, ``content_type``,
    ``headers``, ``delay`` (seconds), ``drop``, ``body_delay`` and ``response_delay``
    (seconds) and ``count`` (null until cleared).
``DELETE /__double__/faults``
    Removes every fault rule. Returns 204.
``POST /__double__/latency``
    ``{"seconds": 0.2}`` sets the delay added to every Quay API request.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import JSONValue
from .keys import REGISTRY_KEY, TRAFFIC_KEY
from .model import InvalidInputError, NotFoundError, RepositoryState
from .serialize import serialize_row
from .traffic import FaultRule

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/__double__"


class _AdminBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ManifestRequest(_AdminBody):
    repository: str
    digest: str
    size: int | None = 0
    is_manifest_list: bool = False
    children: list[str] = Field(default_factory=list)


class TagMoveRequest(_AdminBody):
    repository: str
    tag: str
    digest: str


class ImmutableRequest(_AdminBody):
    repository: str
    tag: str
    immutable: bool = True


class RepositoryStateRequest(_AdminBody):
    state: RepositoryState


class SecondsRequest(_AdminBody):
    seconds: float = Field(ge=0)


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get(ADMIN_PREFIX + "/state", _get_state)
    app.router.add_post(ADMIN_PREFIX + "/manifests", _add_manifest)
    app.router.add_post(ADMIN_PREFIX + "/tags", _move_tag)
    app.router.add_post(ADMIN_PREFIX + "/tags/immutable", _set_immutable)
    app.router.add_post(ADMIN_PREFIX + "/repositories/{namespace}/{repository}/state", _set_repository_state)
    app.router.add_post(ADMIN_PREFIX + "/clock", _advance_clock)
    app.router.add_post(ADMIN_PREFIX + "/gc", _collect_garbage)
    app.router.add_get(ADMIN_PREFIX + "/requests", _get_requests)
    app.router.add_delete(ADMIN_PREFIX + "/requests", _reset_requests)
    app.router.add_get(ADMIN_PREFIX + "/faults", _get_faults)
    app.router.add_post(ADMIN_PREFIX + "/faults", _add_fault)
    app.router.add_delete(ADMIN_PREFIX + "/faults", _clear_faults)
    app.router.add_post(ADMIN_PREFIX + "/latency", _set_latency)


async def _get_state(request: web.Request) -> web.Response:
    return web.json_response(request.app[REGISTRY_KEY].snapshot())


async def _add_manifest(request: web.Request) -> web.Response:
    try:
        body = ManifestRequest.model_validate(await _read_json(request))
        manifest = request.app[REGISTRY_KEY].add_manifest(
            body.repository, body.digest, body.size, body.is_manifest_list, body.children
        )
    except (ValidationError, InvalidInputError, NotFoundError) as error:
        return _admin_error(error)
    logger.info("admin: stored manifest %s in %s", manifest.digest, body.repository)
    result: dict[str, JSONValue] = {
        "digest": manifest.digest,
        "size": manifest.size,
        "is_manifest_list": manifest.is_manifest_list,
        "children": list(manifest.children),
    }
    return web.json_response({"manifest": result}, status=201)


async def _move_tag(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    try:
        body = TagMoveRequest.model_validate(await _read_json(request))
        with registry.lock:
            row = registry.move_tag(body.repository, body.tag, body.digest)
            manifest = registry.get_manifest(body.repository, row.manifest_digest)
    except (ValidationError, InvalidInputError, NotFoundError) as error:
        return _admin_error(error)
    logger.info("admin: moved tag %s of %s to %s", body.tag, body.repository, body.digest)
    return web.json_response({"row": serialize_row(row, manifest)}, status=201)


async def _set_immutable(request: web.Request) -> web.Response:
    try:
        body = ImmutableRequest.model_validate(await _read_json(request))
        request.app[REGISTRY_KEY].set_immutable(body.repository, body.tag, body.immutable)
    except (ValidationError, InvalidInputError, NotFoundError) as error:
        return _admin_error(error)
    logger.info("admin: set tag %s of %s immutable=%s", body.tag, body.repository, body.immutable)
    return web.json_response({})


async def _set_repository_state(request: web.Request) -> web.Response:
    repository = f"{request.match_info['namespace']}/{request.match_info['repository']}"
    try:
        body = RepositoryStateRequest.model_validate(await _read_json(request))
        request.app[REGISTRY_KEY].set_repository_state(repository, body.state)
    except (ValidationError, InvalidInputError, NotFoundError) as error:
        return _admin_error(error)
    logger.info("admin: set %s to state %s", repository, body.state.value)
    return web.json_response({})


async def _advance_clock(request: web.Request) -> web.Response:
    try:
        body = SecondsRequest.model_validate(await _read_json(request))
    except (ValidationError, InvalidInputError) as error:
        return _admin_error(error)
    now_ms = request.app[REGISTRY_KEY].clock.advance(body.seconds)
    logger.info("admin: advanced the clock by %s s", body.seconds)
    return web.json_response({"now_ms": now_ms})


async def _collect_garbage(request: web.Request) -> web.Response:
    report = request.app[REGISTRY_KEY].collect_garbage()
    logger.info(
        "admin: garbage collection removed %d rows and %d manifests",
        report.removed_rows,
        len(report.removed_manifests),
    )
    return web.json_response(
        {"removed_rows": report.removed_rows, "removed_manifests": list(report.removed_manifests)}
    )


async def _get_requests(request: web.Request) -> web.Response:
    traffic = request.app[TRAFFIC_KEY]
    records: list[JSONValue] = [record.to_json() for record in traffic.requests()]
    return web.json_response({"requests": records, "counts": traffic.request_counts()})


async def _reset_requests(request: web.Request) -> web.Response:
    request.app[TRAFFIC_KEY].reset_requests()
    return web.Response(status=204)


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": request.app[TRAFFIC_KEY].faults()})


async def _add_fault(request: web.Request) -> web.Response:
    try:
        rule = FaultRule.model_validate(await _read_json(request))
    except (ValidationError, InvalidInputError) as error:
        return _admin_error(error)
    fault_id = request.app[TRAFFIC_KEY].add_fault(rule)
    logger.info("admin: added fault %d: %s", fault_id, rule.model_dump(exclude_defaults=True))
    return web.json_response({"id": fault_id}, status=201)


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[TRAFFIC_KEY].clear_faults()
    logger.info("admin: cleared all faults")
    return web.Response(status=204)


async def _set_latency(request: web.Request) -> web.Response:
    try:
        body = SecondsRequest.model_validate(await _read_json(request))
    except (ValidationError, InvalidInputError) as error:
        return _admin_error(error)
    request.app[TRAFFIC_KEY].set_latency(body.seconds)
    logger.info("admin: set the added latency to %s s", body.seconds)
    return web.json_response({"latency": body.seconds})


async def _read_json(request: web.Request) -> JSONValue:
    raw_body = await request.read()
    if not raw_body:
        return {}
    try:
        value: JSONValue = json.loads(raw_body)
    except ValueError as error:
        raise InvalidInputError(f"request body is not valid JSON: {error}") from None
    return value


def _admin_error(error: ValidationError | InvalidInputError | NotFoundError) -> web.Response:
    if isinstance(error, ValidationError):
        details = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
        )
        message = f"invalid request body: {details}"
    else:
        message = str(error)
    status = 404 if isinstance(error, NotFoundError) else 400
    logger.warning("admin: rejected request with %d: %s", status, message)
    return web.json_response({"error": message}, status=status)
