"""The controller's clocks, injected so that its loop can be tested with a fake one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """For deadlines and ages: never jumps."""
        ...

    def time(self) -> float:
        """Wall time, for what is stored and shown."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()
