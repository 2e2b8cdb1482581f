"""A controller inside one CLI command, when no `meso controller` runs (no MESO_ADDR).

It is the same Controller on the same state file. A command that changes the state holds the
state file's lock for as long as it runs (one writer; the next one waits a little, or is told
who holds it); one that only reads takes the lock only if nobody holds it, to bring the store
up to date with the hosts first, and otherwise reads what the holder keeps current.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.events import Event, EventBus
from meso_agentless.hosts import dial
from meso_agentless.inventory import load_inventory
from meso_agentless.state.lock import StateLock

if TYPE_CHECKING:
    from meso_agentless.core.jobs import Outcome

LOCK_WAIT = 10.0  # seconds a changing command waits for another one to finish
WATCH_INTERVAL = 0.5  # how often an embedded command samples while it waits on a job
# a fresh process learns a host is dead only by its deadline: it costs a command this, once
SAMPLE_DEADLINE = 2.0


class Attached:
    """What every embedded command starts with: the state file's lock, the inventory, its
    hosts (with `connect`, sampled at once in the background), the store and the fleet. A read
    that needs no controller (controller/reading.py) uses it alone; use as a context manager."""

    def __init__(
        self, inventory_source: str, state: Path, *, write: bool, connect: bool = True
    ) -> None:
        self.lock = StateLock(state)
        self.locked = False
        if write:
            self.lock.acquire_or_explain("meso (embedded)", wait=LOCK_WAIT)
            self.locked = True
        else:
            self.locked = self.lock.acquire("meso (embedded, reading)")
        try:
            self.inventory = load_inventory(inventory_source)
        except BaseException:
            self.lock.release()
            raise
        if connect:  # each host's sshd starts while paramiko is imported
            dial.ahead(((n.address, n.port) for n in self.inventory.nodes), SAMPLE_DEADLINE)
        from meso_agentless.hosts.plane import ExecutionPlane

        self.plane = ExecutionPlane(self.inventory.nodes)
        if connect:
            self.plane.start(SAMPLE_DEADLINE)
        try:
            from meso_agentless.state.sqlite import Store

            self.store = Store(state)
        except BaseException:
            self.plane.close()
            dial.forget()
            self.lock.release()
            raise
        from meso_agentless.controller.fleet import Fleet

        self.clock = SystemClock()
        self.fleet = Fleet(self.plane, self.clock, interval=WATCH_INTERVAL, timeout=SAMPLE_DEADLINE)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.fleet.stop()
        self.plane.close()
        dial.forget()
        self.store.close()
        self.lock.release()


class Embedded(Attached):
    """Store, fleet and controller for one command; use as a context manager."""

    def __init__(
        self,
        inventory_source: str,
        state: Path,
        *,
        write: bool,
        on_event: Callable[[Event], None] | None = None,
        job: str | None = None,
        connect: bool = True,
    ) -> None:
        """`on_event` hears the events of `job` (or of everything). With `connect` every host
        is sampled at once in the background (connected, its node command started) while the
        controller's own modules are imported, and the first round takes those answers: a
        cold command waits for the slower of the two, not for both."""
        super().__init__(inventory_source, state, write=write, connect=connect)
        self.events = EventBus(self.clock.time)
        if on_event is not None:
            self.events.subscribe(job, callback=on_event)
        from meso_agentless.controller.loop import Controller
        from meso_agentless.controller.service import Service

        self.controller = Controller(
            self.store, self.inventory, self.plane, self.fleet, self.clock, self.events
        )
        self.service = Service(self.controller)

    def sync(self, record: bool = True) -> None:
        """Sample every host once; record what they say if `record` and this command holds
        the lock (else only find the units nobody claims, writing nothing)."""
        self.fleet.refresh()
        if record and self.locked:
            self.controller.sync()
        else:
            self.controller.scan(self.fleet.views())

    def drive(
        self,
        name: str,
        version: int,
        on_cycle: Callable[[], None] | None = None,
        detach: bool = False,
    ) -> Outcome | None:
        """Run cycles until the job has an outcome for `version` or later (None with `detach`,
        after one cycle, if it has none yet)."""
        self.controller.tick(allocate_now=True)
        if on_cycle is not None:
            on_cycle()
        outcome, seen = self.controller.outcome(name)
        if detach or (outcome is not None and seen >= version):
            return outcome if outcome is not None and seen >= version else None
        self.fleet.start()
        try:
            while True:
                self.fleet.wait_round(timeout=WATCH_INTERVAL * 4)
                self.controller.tick()
                if on_cycle is not None:
                    on_cycle()
                outcome, seen = self.controller.outcome(name)
                if outcome is not None and seen >= version:
                    return outcome
        finally:
            self.fleet.stop()
