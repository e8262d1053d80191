"""Run a local control plane until Ctrl-C: ``python -m quay_tag_testing.controlplane``."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .build import BuildError
from .process import ProcessError
from .server import ControlPlane


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m quay_tag_testing.controlplane",
        description=(
            "Start etcd and kube-apiserver on 127.0.0.1 (building them on first use), "
            "print the admin kubeconfig path and run until Ctrl-C or SIGTERM."
        ),
    )
    parser.add_argument(
        "--kubeconfig-out",
        type=Path,
        metavar="PATH",
        help="also copy the admin kubeconfig to PATH, which is overwritten and kept after exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every readiness probe at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    # SIGTERM stops like Ctrl-C, so the servers stop and the work folder is removed.
    # SIGINT is set too, because a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)

    plane = ControlPlane()
    try:
        plane.start()
        kubeconfig = plane.kubeconfig_path
        if arguments.kubeconfig_out is not None:
            kubeconfig = arguments.kubeconfig_out.resolve()
            kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plane.kubeconfig_path, kubeconfig)
            kubeconfig.chmod(0o600)

        print(f"kube-apiserver: {plane.server_url}")
        print(f"kubeconfig: {kubeconfig}")
        print(f"export KUBECONFIG={kubeconfig}")
        print("Press Ctrl-C to stop.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        print("Stopping the control plane.", file=sys.stderr, flush=True)
    except (BuildError, ProcessError) as error:
        sys.exit(f"error: {error}")
    finally:
        plane.stop()


def _raise_keyboard_interrupt(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt

if __name__ == "__main__":
    main()
