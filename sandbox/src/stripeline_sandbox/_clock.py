"""The sandbox clock: the one source of time for every sandbox object.

Sandbox time is real time plus an offset that only moves forward when told to
(``advance``). Object timestamps (``created``, ``due_by``), the 24 h idempotency
window and the 30-day event window all read it; webhook signatures do not,
because receivers check them against their own real clock (as with Stripe's
test clocks).
"""

from __future__ import annotations

import threading
import time


class SandboxClock:
    """Real time shifted by an offset that ``advance`` moves forward."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        """Seconds sandbox time is ahead of real time."""
        return self._offset

    def now(self) -> int:
        """Sandbox time in Unix seconds."""
        return int(time.time() + self._offset)

    def advance(self, seconds: float) -> int:
        """Move sandbox time forward by ``seconds``; return the new time.

        Raises:
            ValueError: ``seconds`` is negative (sandbox time never goes back).
        """
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()
