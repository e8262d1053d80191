"""Run the Quay double: in a background thread for tests, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from .clock import Clock
from .errors import JSONValue
from .model import GarbageReport, Manifest, RepositoryState, TagRow
from .seed import Seed, SeedSource, build_registry, load_seed
from .server import create_app
from .state import Registry
from .traffic import FaultRule, RequestRecord, TrafficControl

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"

# Seconds that shutdown waits for requests still in flight, such as one held by a
# fault's delay, before cancelling them.
SHUTDOWN_TIMEOUT = 1.0

# Seconds that QuayDouble.start waits for the server thread to bind its port.
STARTUP_TIMEOUT = 10.0


def check_loopback_host(host: str) -> None:
    """Raise ValueError unless ``host`` is a loopback address, because the admin API has no authentication."""
    if host == "localhost":
        return
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ValueError(f"invalid host {host!r}: expected a loopback IP address such as 127.0.0.1") from None
    if not is_loopback:
        raise ValueError(
            f"cannot listen on {host}: the double's admin API has no authentication, "
            "so it listens on loopback addresses only. Use 127.0.0.1."
        )


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    on_started: Callable[[str], None],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down.

    ``on_started`` receives the base URL, with the bound port, once the socket listens.
    """
    check_loopback_host(host)
    # The double logs its own request lines, so aiohttp's access log stays off.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        scheme = "https" if ssl_context is not None else "http"
        on_started(f"{scheme}://{url_host}:{bound_port}")
        await stop.wait()
    finally:
        await runner.cleanup()


class QuayDouble:
    """A Quay double served on 127.0.0.1 from a background thread with its own event loop.

    Use it as a context manager::

        with QuayDouble("deploy/demo/quay-seed.yaml") as quay:
            httpx.get(quay.url + "/api/v1/repository/quayadmin/busybox/tag/", ...)

    The helper methods change the same state as the admin API and are safe to call
    from any thread while the server runs.
    """

    def __init__(
        self,
        seed: SeedSource | None = None,
        *,
        clock: Clock | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Prepare a double; with ``ssl_context`` it serves HTTPS with that context's certificate."""
        loaded = load_seed(seed) if seed is not None else Seed()
        self.registry: Registry = build_registry(loaded, clock)
        self.traffic = TrafficControl()
        self._port = port
        self._ssl_context = ssl_context
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, such as http://127.0.0.1:40123."""
        if self._url is None:
            raise RuntimeError("the Quay double is not running: call start() or use it in a with block")
        return self._url

    def start(self) -> QuayDouble:
        """Start the server thread and wait until it listens.

        Raises RuntimeError if the server does not start, chained to the startup error.
        """
        if self._thread is not None:
            raise RuntimeError("the Quay double is already running")
        self._started.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name="quay-double", daemon=True)
        self._thread.start()
        if not self._started.wait(STARTUP_TIMEOUT):
            raise RuntimeError(f"the Quay double did not start within {STARTUP_TIMEOUT} s")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("the Quay double failed to start") from self._startup_error
        logger.info("Quay test double listening on %s", self._url)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread. Calling it again does nothing."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stop = None
        self._url = None
        logger.info("Quay test double stopped")

    def __enter__(self) -> QuayDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Helpers for tests.

    def add_manifest(
        self,
        repository: str,
        digest: str,
        *,
        size: int | None = 0,
        is_manifest_list: bool = False,
        children: Iterable[str] = (),
    ) -> Manifest:
        return self.registry.add_manifest(repository, digest, size, is_manifest_list, children)

    def move_tag(self, repository: str, tag: str, digest: str) -> TagRow:
        """Move or create a tag by hand, bypassing auth, repository state and immutability."""
        return self.registry.move_tag(repository, tag, digest)

    def alive_digest(self, repository: str, tag: str) -> str | None:
        """Return the digest that the tag's alive row points to, or None if no row is alive."""
        return self.registry.alive_digest(repository, tag)

    def set_repository_state(self, repository: str, state: RepositoryState | str) -> None:
        self.registry.set_repository_state(repository, state)

    def set_immutable(self, repository: str, tag: str, immutable: bool = True) -> None:
        self.registry.set_immutable(repository, tag, immutable)

    def advance_clock(self, seconds: float) -> int:
        """Advance the double's clock and return the new time in Unix milliseconds."""
        return self.registry.clock.advance(seconds)

    def collect_garbage(self) -> GarbageReport:
        return self.registry.collect_garbage()

    def state(self) -> dict[str, JSONValue]:
        return self.registry.snapshot()

    def add_fault(self, rule: FaultRule | Mapping[str, Any] | None = None, **fields: Any) -> int:
        """Add a fault rule, given as a FaultRule, a mapping or keyword fields, and return its id."""
        if rule is not None and fields:
            raise TypeError("pass a rule or keyword fields, not both")
        return self.traffic.add_fault(rule if rule is not None else fields)

    def clear_faults(self) -> None:
        self.traffic.clear_faults()

    def set_latency(self, seconds: float) -> None:
        self.traffic.set_latency(seconds)

    def requests(self) -> list[RequestRecord]:
        return self.traffic.requests()

    def request_counts(self) -> dict[str, int]:
        return self.traffic.request_counts()

    def reset_requests(self) -> None:
        self.traffic.reset_requests()

    def peak_concurrency(self) -> int:
        """Return the most Quay API requests in flight at once since the last reset."""
        return self.traffic.peak_concurrency()

    # Server thread.

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as error:  # noqa: BLE001 - reported to the thread that called start()
            if not self._started.is_set():
                self._startup_error = error
                self._started.set()
            else:
                logger.exception("the Quay double's server thread failed")
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        stop = asyncio.Event()
        self._loop = loop
        self._stop = stop

        def mark_started(url: str) -> None:
            self._url = url
            self._started.set()

        app = create_app(self.registry, self.traffic)
        await serve_until_stopped(app, LOOPBACK_HOST, self._port, stop, mark_started, self._ssl_context)
