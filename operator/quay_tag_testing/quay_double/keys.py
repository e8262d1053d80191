"""Typed keys under which the aiohttp application stores the double's state."""

from __future__ import annotations

from aiohttp import web

from .state import Registry
from .traffic import TrafficControl

REGISTRY_KEY = web.AppKey("quay_double_registry", Registry)
TRAFFIC_KEY = web.AppKey("quay_double_traffic", TrafficControl)
