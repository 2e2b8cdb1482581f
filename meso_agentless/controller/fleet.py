"""The controller's eyes: every host's latest sample, and whether the host is up.

Each host is sampled (the node command's `sample`: capacity, load, boot identity, the state of
every meso unit) by a thread of its own every `interval`, on its warm connection and with its
own deadline, so a dead host delays nobody but its own sampler; it is retried with a short
backoff. `refresh()` does one round at once instead (one-off commands, and tests with a fake
plane and a fake clock); a host is then judged as of its last answer or failure, not by how
long the round took. Whoever wants to know of changes (a unit's state, a host's state or boot)
passes `on_change`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meso_agentless.controller.clock import Clock
from meso_agentless.core.health import HostState, host_state
from meso_agentless.errors import MesoError
from meso_agentless.hosts.plane import Plane, each_host

MAX_BACKOFF = 2.0  # a host that fails is asked again within this: back up within ~2 s of a heal


@dataclass(frozen=True)
class HostView:
    """What is known of one host now."""

    name: str
    state: HostState
    facts: Mapping[str, Any]  # the last good sample ({} if none yet)
    units: Mapping[str, Mapping[str, Any]]  # unit (no .service) -> its status, from that sample
    asked: float | None  # monotonic time the last good sample was asked for
    seen: float | None  # wall time of the last good sample
    error: str | None  # why the last request failed, if it did

    @property
    def boot(self) -> str | None:
        return self.facts.get("boot")

    @property
    def placeable(self) -> bool:
        """Up, with a sample to place by."""
        return self.state == HostState.UP and bool(self.facts)


@dataclass
class _Record:
    facts: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    ok_at: float | None = None
    asked: float | None = None
    seen: float | None = None
    failed_at: float | None = None
    error: str | None = None
    failures: int = 0
    rounds: int = 0  # finished requests, good or not


class Fleet:
    def __init__(
        self,
        plane: Plane,
        clock: Clock,
        *,
        interval: float = 1.0,
        timeout: float = 3.0,
        suspect_after: float = 2.0,
        unreachable_after: float = 5.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.plane = plane
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self.suspect_after = suspect_after
        self.unreachable_after = unreachable_after
        self.on_change = on_change or (lambda: None)
        self._records = {h: _Record() for h in plane.hosts}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.round_seconds: Callable[[float], None] = lambda _s: None  # metrics' observers
        self.sampled: Callable[[float, bool], None] = lambda _s, _ok: None

    # -- reading -------------------------------------------------------------------------------

    def views(self) -> dict[str, HostView]:
        now = self.clock.monotonic()
        with self._lock:
            return {name: self._view(name, r, now) for name, r in self._records.items()}

    def view(self, name: str) -> HostView:
        now = self.clock.monotonic()
        with self._lock:
            return self._view(name, self._records[name], now)

    def _view(self, name: str, r: _Record, now: float) -> HostView:
        if not self._threads:  # sampled in rounds: judged as of its last answer or failure
            now = max(r.ok_at or 0.0, r.failed_at or 0.0)
        state = host_state(r.ok_at, r.failed_at, now, self.suspect_after, self.unreachable_after)
        return HostView(name, state, r.facts, r.units, r.asked, r.seen, r.error)

    def wait_round(self, timeout: float) -> None:
        """Until every host has finished one more request (good or not), or `timeout`."""
        with self._lock:
            target = {name: r.rounds + 1 for name, r in self._records.items()}
            self._lock.wait_for(
                lambda: all(self._records[n].rounds >= t for n, t in target.items()), timeout
            )

    # -- sampling ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """One round: every host sampled at once, each with its own deadline."""
        start = self.clock.monotonic()
        each_host(list(self._records), self.sample_one)
        self.round_seconds(self.clock.monotonic() - start)

    def sample_one(self, host: str) -> None:
        asked = self.clock.monotonic()
        try:
            facts = self.plane.sample(host, timeout=self.timeout)
            error = None
        except MesoError as exc:  # Unreachable or NodeRefused: the same to the watcher
            facts, error = None, str(exc)
        self.sampled(self.clock.monotonic() - asked, facts is not None)
        self._record(host, asked, facts, error)

    def _record(self, host: str, asked: float, facts: dict | None, error: str | None) -> None:
        now = self.clock.monotonic()
        with self._lock:
            r = self._records[host]
            before = (self._view(host, r, now).state, r.facts.get("boot"), _signature(r.units))
            if facts is not None:
                r.facts, r.ok_at, r.asked, r.seen = facts, now, asked, self.clock.time()
                r.units = {str(u.get("unit", "")).removesuffix(".service"): u
                           for u in facts.get("units", ()) if isinstance(u, dict)}  # fmt: skip
                r.error, r.failures = None, 0
            else:
                r.failed_at, r.error = now, error
                r.failures += 1
            r.rounds += 1
            after = (self._view(host, r, now).state, r.facts.get("boot"), _signature(r.units))
            self._lock.notify_all()
        if after != before:
            self.on_change()

    def start(self) -> None:
        """Sample every host every `interval` in the background, until stop()."""
        self._stopping.clear()
        for host in self._records:
            thread = threading.Thread(target=self._watch, args=(host,), name=f"watch-{host}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._threads.append(thread)

    def _watch(self, host: str) -> None:
        while not self._stopping.is_set():
            start = self.clock.monotonic()
            self.sample_one(host)
            with self._lock:
                failures = self._records[host].failures
            pause = self.interval if not failures else min(MAX_BACKOFF, self.interval * failures)
            self._stopping.wait(max(0.0, start + pause - self.clock.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 1)
        self._threads.clear()

    def hosts_up(self) -> int:
        return sum(v.state == HostState.UP for v in self.views().values())


def _signature(units: Mapping[str, Mapping]) -> tuple:
    return tuple(sorted((u, s.get("state"), s.get("exit_code"), s.get("restarts"))
                        for u, s in units.items()))  # fmt: skip
