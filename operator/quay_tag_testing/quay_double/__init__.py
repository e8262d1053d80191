"""A Quay test double: a real HTTP server with Quay's tag API, status codes and history rows.

Start it in tests with :class:`QuayDouble`, or standalone with
``python -m quay_tag_testing.quay_double --seed FILE``. The admin API under
``/__double__/`` (see ``admin.py``) changes its state, clock and faults at run time.
"""

from .clock import Clock
from .errors import QuayError
from .model import GarbageReport, InvalidInputError, Manifest, NotFoundError, RepositoryState, Role, TagRow
from .runner import QuayDouble
from .seed import Seed, build_registry, load_seed
from .server import create_app
from .state import Registry
from .traffic import FaultRule, RequestRecord, TrafficControl

__all__ = [
    "Clock",
    "FaultRule",
    "GarbageReport",
    "InvalidInputError",
    "Manifest",
    "NotFoundError",
    "QuayDouble",
    "QuayError",
    "Registry",
    "RepositoryState",
    "RequestRecord",
    "Role",
    "Seed",
    "TagRow",
    "TrafficControl",
    "build_registry",
    "create_app",
    "load_seed",
]
