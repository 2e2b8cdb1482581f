"""One writer per state file: an exclusive lock beside it, saying who holds it.

`meso controller` holds it for its whole life; an embedded command that changes the state holds
it while it runs. A second one waits, or is told who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO

from meso_agentless.errors import UsageError


class StateLock:
    """flock(2) on STATE.lock; the holder's pid, role and address are written inside."""

    def __init__(self, state: Path) -> None:
        self.path = state.with_name(state.name + ".lock")
        self._file: IO[str] | None = None

    def holder(self) -> dict:
        """Who wrote the lock file last ({} if nobody): pid, role, addr."""
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self, role: str, addr: str | None = None, wait: float = 0.0) -> bool:
        """Take the lock within `wait` seconds; False if someone else holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(0.05)
        self._file = handle
        self.describe(role, addr)
        return True

    def describe(self, role: str, addr: str | None) -> None:
        """Say who holds the lock (once the address is known, for instance)."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "role": role, "addr": addr}))
        self._file.flush()

    def acquire_or_explain(self, role: str, wait: float) -> None:
        """Take the lock, waiting up to `wait` seconds for another command (never for a
        controller, which holds it for good); UsageError naming the holder if not."""
        if self.acquire(role):
            return
        if self.holder().get("role") != "controller" and self.acquire(role, wait=wait):
            return
        holder = self.holder()
        if holder.get("role") == "controller":
            raise UsageError(
                f"state {self.path.with_suffix('')} belongs to a running meso controller "
                f"(pid {holder.get('pid')}, {holder.get('addr')}): set MESO_ADDR="
                f"{holder.get('addr')} to use it"
            )
        raise UsageError(
            f"state {self.path.with_suffix('')} is in use by pid {holder.get('pid')} "
            f"({holder.get('role')}); try again when it ends"
        )

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
