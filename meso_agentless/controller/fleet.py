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

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meso_agentless.controller.clock import Clock
from meso_agentless.controller.unitstatus import UnitStatus, same_units, units_map
from meso_agentless.core.health import HostState, host_state
from meso_agentless.errors import MesoError
from meso_agentless.hosts.plane import NodeRefused, Plane, each_host

log = logging.getLogger("meso.fleet")
MAX_BACKOFF = 2.0  # a host that fails is asked again within this: back up within ~2 s of a heal
CHECK_TICK = 0.5  # how often the checker looks for due health checks
STATE_TICK = 0.25  # how often silence is weighed: a host turns suspect or unreachable on time


@dataclass(frozen=True)
class Check:
    """A health check to run on a host for one unit."""

    request: dict  # the node command's health request
    interval: float
    grace_until: float  # monotonic: failures before it do not count


@dataclass(frozen=True)
class HealthResult:
    healthy: bool | None  # None: not checked yet
    failures: int  # failed checks in a row that count (after the grace period)
    detail: str
    checked: float | None  # monotonic time of the last check


NOT_CHECKED = HealthResult(None, 0, "not checked yet", None)


@dataclass(frozen=True)
class HostView:
    """What is known of one host now."""

    name: str
    state: HostState
    facts: Mapping[str, Any]  # the last good sample ({} if none yet), but for its units
    units: Mapping[str, UnitStatus]  # unit (no .service) -> its status, from that sample
    asked: float | None  # monotonic time the last good sample was asked for
    seen: float | None  # wall time of the last good sample
    error: str | None  # why the last request failed, if it did
    health: Mapping[str, HealthResult] = field(default_factory=dict)  # unit -> last check
    marks: int = 0  # a hash of its units' and runs' reported states: equal marks, same report

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
    # a hash of its units' and runs' signatures as of the last good sample (a change of it is
    # worth a cycle at once; kept as a hash, not the tuples: 80 bytes less per task)
    marks: int = hash(((), ()))


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
        self._checks: dict[str, dict[str, Check]] = {}  # host -> unit -> check
        self._sample_fields: dict[str, dict] = {}  # host -> what its samples carry
        self._health: dict[str, HealthResult] = {}  # unit -> result
        self._due: dict[str, float] = {}  # unit -> monotonic time its next check is due
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
        if state in (HostState.UP, HostState.SUSPECT) and r.facts.get("system") == "stopping":
            state = HostState.STOPPING
        health = {u: self._health.get(u, NOT_CHECKED) for u in self._checks.get(name, {})}
        return HostView(name, state, r.facts, r.units, r.asked, r.seen, r.error, health, r.marks)

    def wait_round(self, timeout: float) -> None:
        """Until every answering host has finished one more request (good or not), or
        `timeout`: one that failed its last is not waited for (its deadline, once, is enough)."""
        with self._lock:
            target = {n: r.rounds + 1 for n, r in self._records.items() if not r.failures}
            self._lock.wait_for(
                lambda: all(self._records[n].rounds >= t for n, t in target.items()), timeout
            )

    # -- sampling ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """One round: every host sampled at once, each with its own deadline, then the health
        checks that are due."""
        start = self.clock.monotonic()
        sample_round = getattr(self.plane, "sample_round", None)  # pipelined, where it can be
        if sample_round is None:
            each_host(list(self._records), self.sample_one)
        else:
            with self._lock:
                fields = {h: self._sample_fields.get(h, {}) for h in self._records}
            answers = sample_round(fields, timeout=self.timeout)
            for host, answer in answers.items():
                self._sampled(host, start, answer)
        self.round_seconds(self.clock.monotonic() - start)
        self.run_checks()

    # -- health checks -------------------------------------------------------------------------

    def set_checks(self, checks: Mapping[str, Mapping[str, Check]]) -> None:
        """The checks to run from now on (host -> unit -> check); others are dropped."""
        with self._lock:
            self._checks = {h: dict(c) for h, c in checks.items() if c}
            wanted = {u for c in self._checks.values() for u in c}
            for unit in set(self._health) - wanted:
                del self._health[unit]
            for unit in set(self._due) - wanted:
                del self._due[unit]

    def set_sample_fields(self, fields: Mapping[str, Mapping]) -> None:
        """What every sample of a host carries from now on (the leases of the cron timers it
        holds, the runs already stored); a host left out gets none."""
        with self._lock:
            self._sample_fields = {h: dict(f) for h, f in fields.items()}

    def run_checks(self) -> None:
        """Run every due check, hosts at once, each host's one after another."""
        now = self.clock.monotonic()
        with self._lock:
            due = {h: [(u, c) for u, c in checks.items() if self._due.get(u, 0.0) <= now]
                   for h, checks in self._checks.items()}  # fmt: skip
        hosts = [h for h, items in due.items() if items]

        def check_host(host: str) -> None:
            for unit, check in due[host]:
                try:
                    self._check(host, unit, check)
                except Exception:  # a bug in one check must not stop the others
                    log.exception("health check of %s on %s failed", unit, host)

        each_host(hosts, check_host)

    def _check(self, host: str, unit: str, check: Check) -> None:
        timeout = float(check.request.get("timeout", 2)) + 3.0  # the node's own wait, and a bit
        try:
            answer = self.plane.health(host, check.request, timeout=timeout)
            healthy, detail = bool(answer.get("healthy")), str(answer.get("detail", ""))[:300]
        except NodeRefused as exc:  # the check cannot be run as asked: it does not pass
            healthy, detail = False, str(exc)[:300]
        except MesoError:  # the host, not the task: no verdict on the task
            with self._lock:
                self._due[unit] = self.clock.monotonic() + check.interval
            return
        now = self.clock.monotonic()
        with self._lock:
            if unit not in self._checks.get(host, {}):
                return  # dropped meanwhile
            before = self._health.get(unit, NOT_CHECKED)
            counts = not healthy and now >= check.grace_until
            failures = 0 if healthy else before.failures + counts
            self._health[unit] = HealthResult(healthy, failures, detail, now)
            self._due[unit] = now + check.interval
        if (before.healthy, before.failures) != (healthy, failures):
            self.on_change()

    def sample_one(self, host: str) -> None:
        asked = self.clock.monotonic()
        with self._lock:
            fields = self._sample_fields.get(host, {})
        try:
            answer: dict | Exception = self.plane.sample(host, timeout=self.timeout, **fields)
        except Exception as exc:  # judged in _sampled
            answer = exc
        self._sampled(host, asked, answer)

    def _sampled(self, host: str, asked: float, answer: dict | Exception) -> None:
        """Record a host's answer to a sample asked at `asked` (or why it has none)."""
        facts, error = None, None
        if isinstance(answer, MesoError):  # Unreachable or NodeRefused: the same to the watcher
            error = str(answer)
        elif isinstance(answer, Exception):  # a bug here must not stop watching the host
            log.error("sampling %s failed", host, exc_info=answer)
            error = f"{type(answer).__name__}: {answer}"
        elif answer.get("system") == "offline":  # its unit list cannot be believed
            error = f"{host}: systemd does not answer (shutting down?)"
        else:
            facts = answer
        self.sampled(self.clock.monotonic() - asked, facts is not None)
        self._record(host, asked, facts, error)

    def _record(self, host: str, asked: float, facts: dict | None, error: str | None) -> None:
        now = self.clock.monotonic()
        with self._lock:
            r = self._records[host]
            before = (self._view(host, r, now).state, r.facts.get("boot"), r.marks)
            if facts is not None:
                # the units are kept compact in r.units only, not in the facts as well
                units = facts.pop("units", None)
                units = units if isinstance(units, list) else []
                same = facts.get("runs") == r.facts.get("runs") and same_units(units, r.units)
                r.facts, r.ok_at, r.asked, r.seen = facts, now, asked, self.clock.time()
                if not same:  # else as last time: the map and marks stay
                    r.units = units_map(units, unit_key)
                    r.marks = hash((_signature(r.units), _runs_signature(r.facts)))
                r.error, r.failures = None, 0
            else:
                r.failed_at, r.error = now, error
                r.failures += 1
            r.rounds += 1
            after = (self._view(host, r, now).state, r.facts.get("boot"), r.marks)
            self._lock.notify_all()
        if after != before:
            self.on_change()

    def start(self) -> None:
        """Sample every host every `interval` in the background (and run the health checks as
        they fall due), until stop()."""
        self._stopping.clear()
        for host in self._records:
            thread = threading.Thread(target=self._watch, args=(host,), name=f"watch-{host}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._threads.append(thread)
        for target, name in ((self._check_loop, "health"), (self._state_loop, "silence")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _check_loop(self) -> None:
        while not self._stopping.wait(CHECK_TICK):
            self.run_checks()

    def _state_loop(self) -> None:
        """A host that stays silent changes state with no answer to tell of it: look often."""
        states = {name: view.state for name, view in self.views().items()}
        while not self._stopping.wait(STATE_TICK):
            now = {name: view.state for name, view in self.views().items()}
            if now != states:
                states = now
                self.on_change()

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


def unit_key(unit: object) -> str:
    """A unit as the controller names it: meso-JOB_TASK_INDEX_ATTEMPT (a task's service, or a
    cron job's timer)."""
    return str(unit or "").removesuffix(".service").removesuffix(".timer")


def _signature(units: Mapping[str, Mapping]) -> tuple:
    """Every field of a unit's status that the controller judges it by."""
    return tuple(sorted((u, s.get("state"), s.get("exit_code"), s.get("signal"), s.get("reason"),
                         s.get("restarts"), s.get("description"))
                        for u, s in units.items()))  # fmt: skip


def _runs_signature(facts: Mapping[str, Any]) -> tuple:
    """Cron runs as a host reported them: a change is worth a cycle (to record it)."""
    runs = facts.get("runs") or ()
    return tuple(sorted((str(r.get("unit") or r.get("run")), r.get("state"), r.get("seq"))
                        for r in runs if isinstance(r, dict)))  # fmt: skip
