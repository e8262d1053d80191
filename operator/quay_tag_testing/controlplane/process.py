"""Child processes that log to a file and do not outlive the Python process."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# prctl(2) option that sends the child a signal when its parent thread exits (Linux).
_PR_SET_PDEATHSIG = 1


class ProcessError(RuntimeError):
    """A control plane process failed to start, exited early or did not stop."""


def kill_when_parent_exits() -> None:
    """Ask Linux to send SIGKILL to this process when its parent thread exits.

    Meant as `preexec_fn`, so it runs in the child between fork and exec. atexit
    handlers do not run when the Python process is killed by a signal, and this
    covers that case.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One server process in its own process group, with stdout and stderr in a log file.

    The process group keeps Ctrl-C in a terminal from reaching the server directly, so
    the owner decides the order of shutdown. stop() signals the whole group.
    """

    def __init__(self, name: str, command: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self.is_running():
            raise ProcessError(f"{self.name} is already running with pid {self.pid}")
        with self.log_path.open("ab") as log:
            # NOTE: PR_SET_PDEATHSIG fires when the thread that started the child exits,
            # not the process, so start control planes from a thread that lives as long
            # as they should (the main thread in pytest and in __main__).
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=kill_when_parent_exits,
            )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def stop(self, timeout: float) -> None:
        """Send SIGTERM to the process group, then SIGKILL if it has not exited after `timeout` seconds."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=timeout)
        # The group is signalled only while its leader is alive, because after the leader
        # is reaped its id may belong to an unrelated process. etcd 3.7 and
        # kube-apiserver 1.37 start no child processes.
        self._process = None

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the log file, or a note that it is empty or missing."""
        try:
            content = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log file at {self.log_path})"
        tail = content.splitlines()[-lines:]
        return "\n".join(tail) if tail else f"({self.log_path} is empty)"
