"""The double's clock: wall time plus an offset that tests can advance."""

from __future__ import annotations

import threading
import time


class Clock:
    """Time source for tag lifetimes, in Unix milliseconds.

    By default the clock follows wall time. With ``frozen_at_ms`` it stays at that instant,
    so rows written in one test get predictable timestamps. Either way,
    ``advance`` moves it forward, which is how tests reach expirations and the
    garbage-collection window without sleeping.
    """

    def __init__(self, frozen_at_ms: int | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen_at_ms = frozen_at_ms
        self._offset_ms = 0

    @property
    def frozen(self) -> bool:
        return self._frozen_at_ms is not None

    def now_ms(self) -> int:
        with self._lock:
            base_ms = self._frozen_at_ms if self._frozen_at_ms is not None else _wall_ms()
            return base_ms + self._offset_ms

    def advance(self, seconds: float) -> int:
        """Move the clock forward by ``seconds`` and return the new time in milliseconds.

        Raises ValueError for a negative value, because tag rows assume time never runs
        backwards.
        """
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards: seconds={seconds}")
        with self._lock:
            self._offset_ms += round(seconds * 1000)
        return self.now_ms()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
