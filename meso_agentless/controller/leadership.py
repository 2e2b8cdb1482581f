"""Which controller leads: one lease in the shared database, renewed every second.

Several `meso controller` processes on one PostgreSQL state elect their leader through the
lease (state.postgres.PgLease): the one holding it samples, allocates and launches, with the
lease's epoch on every request that changes a host; the others are standbys. A leader
considers itself leader only until its lease would expire as counted on its own monotonic
clock from before its last renewal was sent (less a margin), so it stops acting before the
database could give the lease to another, even if it was frozen or cut off from the database;
the hosts refuse a deposed leader's lower epoch whatever it still tries (fencing).

A SQLite state has one controller (its file lock says so): `Sole` leads, without an epoch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from meso_agentless.errors import MesoError

log = logging.getLogger("meso.controller")
MARGIN = 1.0  # seconds a leader stops acting before its lease could expire in the database


class NotLeader(MesoError):
    """This controller does not lead (any more): the change was not made; ask the leader."""


class Lease(Protocol):
    def acquire(self) -> int | None: ...
    def renew(self, epoch: int) -> bool: ...
    def release(self, epoch: int) -> None: ...
    def leader(self) -> tuple[str | None, int, bool]: ...
    def close(self) -> None: ...


class Sole:
    """One controller on its own state: always the leader, no epoch (nothing to fence)."""

    kind = "sole"

    def state(self) -> tuple[bool, int | None]:
        return True, None

    def leader_addr(self) -> str | None:
        return None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Leadership:
    """This controller's standing, kept by a thread that renews (or tries to take) the lease
    every `every` seconds. `step()` is one such attempt (the tests call it directly)."""

    kind = "lease"

    def __init__(
        self,
        lease: Lease,
        ttl: float,
        every: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if ttl <= every + MARGIN:
            raise ValueError("the lease must outlast a renewal interval and the margin")
        self.lease = lease
        self.ttl = ttl
        self.every = every
        self.monotonic = monotonic
        self.on_change = on_change  # leadership won or lost (wake the controller's thread)
        self._lock = threading.Lock()
        self._epoch: int | None = None  # the epoch of the lease this controller holds
        self._valid_until = -1.0  # monotonic: it may act until then
        self._leader: tuple[str | None, int] = (None, 0)  # the leader's address and epoch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._failing = False

    def state(self) -> tuple[bool, int | None]:
        """(whether this controller leads now, its epoch)."""
        with self._lock:
            leading = self._epoch is not None and self.monotonic() < self._valid_until
            return leading, self._epoch if leading else None

    def leader_addr(self) -> str | None:
        """The leader's API address, as last read from the database (None: none known)."""
        with self._lock:
            return self._leader[0]

    def step(self) -> None:
        sent = self.monotonic()
        before = self.state()
        try:
            with self._lock:
                epoch = self._epoch
            if epoch is not None and not self.lease.renew(epoch):
                log.warning("lease lost: epoch %d belongs to another controller now; standby",
                            epoch)  # fmt: skip
                with self._lock:
                    self._epoch = None
                epoch = None
            if epoch is None:
                epoch = self.lease.acquire()
                if epoch is not None:
                    log.info("lease taken: leader at epoch %d", epoch)
            addr, current, live = self.lease.leader()
            with self._lock:
                self._epoch = epoch
                if epoch is not None:
                    self._valid_until = sent + self.ttl - MARGIN
                self._leader = (addr, current) if live else (None, current)
            if self._failing:
                log.info("the database answers again")
                self._failing = False
        except Exception as exc:  # the database is away: the lease simply runs out
            if not self._failing:
                log.warning("lease not renewed: %s", str(exc).splitlines()[0] if str(exc) else
                            type(exc).__name__)  # fmt: skip
                self._failing = True
        if self.state() != before:
            self.on_change()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = self.monotonic()
            self.step()
            self._stopping.wait(max(0.0, started + self.every - self.monotonic()))

    def stop(self) -> None:
        """Stop renewing and let the lease go (a standby takes over at once)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.ttl)
        with self._lock:
            epoch, self._epoch = self._epoch, None
        if epoch is not None:
            try:
                self.lease.release(epoch)
            except Exception as exc:  # it will expire on its own
                log.warning("lease not released: %s", type(exc).__name__)
        self.lease.close()
