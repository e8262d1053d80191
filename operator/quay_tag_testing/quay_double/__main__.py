"""Run the Quay double in the foreground until SIGINT or SIGTERM.

Example: ``python -m quay_tag_testing.quay_double --seed deploy/demo/quay-seed.yaml``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import yaml
from aiohttp import web
from pydantic import ValidationError

from .model import InvalidInputError, NotFoundError
from .runner import check_loopback_host, serve_until_stopped
from .seed import build_registry, load_seed
from .server import create_app

logger = logging.getLogger("quay_tag_testing.quay_double")


def main(argv: list[str] | None = None) -> int:
    args = _parse_arguments(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        check_loopback_host(args.host)
        registry = build_registry(load_seed(args.seed))
    except (OSError, yaml.YAMLError, ValidationError, InvalidInputError, NotFoundError, ValueError) as error:
        print(f"error: cannot start the Quay double: {error}", file=sys.stderr)
        return 2

    asyncio.run(_serve(create_app(registry), args.host, args.port, args.url_file))
    return 0


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m quay_tag_testing.quay_double",
        description="Serve a test double of Red Hat Quay's tag API, seeded from a YAML file.",
    )
    parser.add_argument("--seed", required=True, type=Path, help="YAML seed file with users, tokens and repositories.")
    parser.add_argument("--host", default="127.0.0.1", help="Loopback address to listen on (default: 127.0.0.1).")
    parser.add_argument("--port", default=0, type=int, help="TCP port to listen on. 0 picks a free port (default: 0).")
    parser.add_argument(
        "--url-file",
        type=Path,
        help="File to write the base URL to once the server listens. It is removed on shutdown.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Logging level. DEBUG also logs every Quay API request (default: INFO).",
    )
    return parser.parse_args(argv)


async def _serve(app: web.Application, host: str, port: int, url_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)

    def announce(url: str) -> None:
        print(f"Quay test double listening on {url}", flush=True)
        if url_file is not None:
            _write_atomically(url_file, url + "\n")

    try:
        await serve_until_stopped(app, host, port, stop, announce)
    finally:
        if url_file is not None:
            url_file.unlink(missing_ok=True)
    logger.info("Quay test double stopped")


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and rename it, so a reader never sees a partial URL."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


if __name__ == "__main__":
    sys.exit(main())
