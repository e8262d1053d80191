"""aiohttp application serving Quay's tag API from a :class:`Registry`.

Quay routes (all under ``/api/v1/repository/{namespace}/{repository}``):

- ``GET .../tag/`` lists tag history. Without the trailing slash the response is
  Werkzeug's 308 redirect with an HTML body.
- ``PUT .../tag/{tag}`` sets an expiration and/or moves the tag (201, ``"Updated"``).
- ``POST .../tag/{tag}/restore`` points the tag at any stored manifest (200, ``{}``).
- ``DELETE .../tag/{tag}`` ends the alive row (204, empty body).

Each handler runs Quay's checks in the order its decorators run: authentication
(401), permission (403), repository state for writes (503), body parsing (415, 400),
then the endpoint itself. Unknown URLs and wrong methods under ``/api/`` get
Werkzeug's 404 and 405 messages as JSON. The admin API is documented in ``admin.py``.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .admin import add_admin_routes
from .errors import (
    ERROR_TYPE_PATH,
    JSON_CONTENT_TYPE,
    METHOD_NOT_ALLOWED_MESSAGE,
    URL_NOT_FOUND_MESSAGE,
    JSONValue,
    QuayError,
    framework_error,
)
from .keys import REGISTRY_KEY, TRAFFIC_KEY
from .model import Role
from .payloads import parse_change_tag_body, parse_json_body, parse_restore_body, parse_tag_query, parse_truthy_bool
from .serialize import serialize_page
from .state import Registry
from .traffic import FaultRule, TrafficControl

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
_REPOSITORY_PATH = "/api/v1/repository/{namespace}/{repository}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(registry: Registry, traffic: TrafficControl | None = None) -> web.Application:
    """Build the application. ``traffic`` defaults to a fresh TrafficControl."""
    app = web.Application(middlewares=[_traffic_middleware, _werkzeug_errors_middleware])
    app[REGISTRY_KEY] = registry
    app[TRAFFIC_KEY] = traffic or TrafficControl()

    app.router.add_get(_REPOSITORY_PATH + "/tag/", _list_tags)
    app.router.add_get(_REPOSITORY_PATH + "/tag", _redirect_to_trailing_slash)
    app.router.add_put(_REPOSITORY_PATH + "/tag/{tag}", _change_tag)
    app.router.add_delete(_REPOSITORY_PATH + "/tag/{tag}", _delete_tag)
    app.router.add_post(_REPOSITORY_PATH + "/tag/{tag}/restore", _restore_tag)
    add_admin_routes(app)
    return app


# Quay API handlers.


async def _list_tags(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    namespace, repository = _repository_of(request)
    try:
        with registry.lock:
            identity = registry.authenticate(request.headers.get("Authorization"))
            registry.authorize(identity, namespace, Role.READ)
            query = parse_tag_query(_first_query_values(request))
            page = registry.list_tags(namespace, repository, query)
    except QuayError as error:
        return _error_response(request, error)
    return _json_response(200, serialize_page(page))


async def _change_tag(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    namespace, repository = _repository_of(request)
    tag = request.match_info["tag"]
    raw_body = await request.read()
    try:
        with registry.lock:
            _check_tag_write(registry, request, namespace, repository)
            body = parse_change_tag_body(parse_json_body(request.headers.get("Content-Type"), raw_body))
            registry.change_tag(
                namespace, repository, tag, expiration=body.expiration, manifest_digest=body.manifest_digest
            )
    except QuayError as error:
        return _error_response(request, error)
    return _json_response(201, "Updated")


async def _restore_tag(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    namespace, repository = _repository_of(request)
    tag = request.match_info["tag"]
    raw_body = await request.read()
    try:
        with registry.lock:
            _check_tag_write(registry, request, namespace, repository)
            manifest_digest = parse_restore_body(parse_json_body(request.headers.get("Content-Type"), raw_body))
            registry.restore_tag(namespace, repository, tag, manifest_digest)
    except QuayError as error:
        return _error_response(request, error)
    return _json_response(200, {})


async def _delete_tag(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    namespace, repository = _repository_of(request)
    tag = request.match_info["tag"]
    try:
        with registry.lock:
            _check_tag_write(registry, request, namespace, repository)
            skip_recovery_period = parse_truthy_bool(request.query.get("skipRecoveryPeriod"))
            registry.delete_tag(namespace, repository, tag, skip_recovery_period)
    except QuayError as error:
        return _error_response(request, error)
    return web.Response(status=204)


def _check_tag_write(registry: Registry, request: web.Request, namespace: str, repository: str) -> None:
    """Raise QuayError unless the caller may write tags here, in Quay's order of checks."""
    identity = registry.authenticate(request.headers.get("Authorization"))
    registry.authorize(identity, namespace, Role.WRITE)
    registry.require_normal_state(namespace, repository)


async def _redirect_to_trailing_slash(request: web.Request) -> web.StreamResponse:
    """Redirect as Werkzeug does for a strict-slash route: 308 and a small HTML page."""
    location = f"{request.scheme}://{request.host}{request.rel_url.raw_path}/"
    if request.query_string:
        location += "?" + request.rel_url.raw_query_string
    escaped = html.escape(location)
    page = (
        "<!doctype html>\n"
        "<html lang=en>\n"
        "<title>Redirecting...</title>\n"
        "<h1>Redirecting...</h1>\n"
        "<p>You should be redirected automatically to the target URL: "
        f'<a href="{escaped}">{escaped}</a>. If not, click the link.\n'
    )
    return web.Response(status=308, text=page, content_type="text/html", headers={"Location": location})


# Middlewares.


@web.middleware
async def _traffic_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log Quay API requests and apply the added latency and the fault rules."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)

    traffic = request.app[TRAFFIC_KEY]
    traffic.enter()
    try:
        return await _serve_api_request(request, handler, traffic)
    finally:
        traffic.leave()


async def _serve_api_request(request: web.Request, handler: Handler, traffic: TrafficControl) -> web.StreamResponse:
    request_id = traffic.begin_request(request.method, request.path, _first_query_values(request))
    latency = traffic.latency
    if latency > 0:
        await asyncio.sleep(latency)

    fault = traffic.take_fault(request.method, request.path)
    if fault is not None:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            logger.info("fault: dropping the connection of %s %s", request.method, request.path)
            traffic.finish_request(request_id, None, fault=True)
            return _drop_connection(request)
        if fault.status is not None:
            logger.info("fault: responding to %s %s with %d", request.method, request.path, fault.status)
            traffic.finish_request(request_id, fault.status, fault=True)
            if fault.body_delay > 0:
                return await _send_slow_fault_response(request, fault)
            return _fault_response(fault)

    try:
        response = await handler(request)
    except Exception:
        # aiohttp logs the error and sends a 500, so record that status.
        traffic.finish_request(request_id, 500)
        raise
    traffic.finish_request(request_id, response.status)
    logger.debug("%s %s -> %d", request.method, request.path, response.status)
    if fault is not None and fault.response_delay > 0:
        # The registry has already applied the request; only the response waits.
        logger.info("fault: holding the %d response to %s %s", response.status, request.method, request.path)
        await asyncio.sleep(fault.response_delay)
    return response


@web.middleware
async def _werkzeug_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's routing errors under /api/ into the JSON that Quay's Flask app sends."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if not request.path.startswith(API_PREFIX):
            raise
        return _error_response(request, framework_error(404, URL_NOT_FOUND_MESSAGE))
    except web.HTTPMethodNotAllowed as error:
        if not request.path.startswith(API_PREFIX):
            raise
        response = _error_response(request, framework_error(405, METHOD_NOT_ALLOWED_MESSAGE))
        response.headers["Allow"] = ", ".join(sorted(error.allowed_methods))
        return response


# Responses.


def _json_response(status: int, body: JSONValue) -> web.Response:
    # flask-restful's JSON representation ends the document with a newline.
    return web.Response(status=status, body=(json.dumps(body) + "\n").encode(), content_type=JSON_CONTENT_TYPE)


def _error_response(request: web.Request, error: QuayError) -> web.Response:
    """Render a QuayError. This is the only place that maps errors to responses."""
    logger.debug("%s %s rejected with %d: %r", request.method, request.path, error.status, error.body)
    body = error.body
    if isinstance(body, dict):
        error_type = body.get("type")
        if isinstance(error_type, str) and error_type.startswith(ERROR_TYPE_PATH):
            body = {**body, "type": f"{request.scheme}://{request.host}{error_type}"}

    if error.content_type == JSON_CONTENT_TYPE:
        response = _json_response(error.status, body)
    else:
        response = web.Response(status=error.status, body=str(body).encode(), content_type=error.content_type)
    response.headers.update(error.headers)
    return response


def _fault_response(fault: FaultRule) -> web.Response:
    assert fault.status is not None
    response = web.Response(status=fault.status, body=_fault_payload(fault))
    # Set the header directly so that aiohttp does not add a charset to it.
    response.headers["Content-Type"] = fault.response_content_type()
    response.headers.update(fault.headers)
    return response


async def _send_slow_fault_response(request: web.Request, fault: FaultRule) -> web.StreamResponse:
    """Send the status, the headers with the full Content-Length and half the body, then the rest after ``body_delay``."""
    assert fault.status is not None
    payload = _fault_payload(fault)
    response = web.StreamResponse(status=fault.status)
    response.headers["Content-Type"] = fault.response_content_type()
    response.headers.update(fault.headers)
    response.content_length = len(payload)
    half = len(payload) // 2
    try:
        await response.prepare(request)
        await response.write(payload[:half])
        await asyncio.sleep(fault.body_delay)
        await response.write(payload[half:])
        await response.write_eof()
    except ConnectionError:
        # The client gave up waiting for the rest of the body, which is what the fault provokes.
        logger.info("fault: the client of %s %s closed the connection mid-body", request.method, request.path)
    return response


def _fault_payload(fault: FaultRule) -> bytes:
    if isinstance(fault.body, (dict, list)):
        return json.dumps(fault.body).encode()
    return (fault.body or "").encode()


def _drop_connection(request: web.Request) -> web.Response:
    """Close the connection so the client sees it end without any response.

    aiohttp cannot write the returned response to a closed transport, so the client
    receives nothing.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


# Request helpers.


def _repository_of(request: web.Request) -> tuple[str, str]:
    return request.match_info["namespace"], request.match_info["repository"]


def _first_query_values(request: web.Request) -> dict[str, str]:
    """Return each query argument's first value, as reqparse's default ``store`` action uses."""
    values: dict[str, str] = {}
    for name, value in request.query.items():
        values.setdefault(name, value)
    return values
