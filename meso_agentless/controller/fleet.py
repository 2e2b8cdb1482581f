"""The controller's eyes: every host's latest sample, and whether the host is up.

Every host is sampled (the node command's `sample`: capacity, load, boot identity, the state of
every meso unit) every `interval` in one round (`start()`): one thread sends to every answering
host before it reads from any (the plane's `sample_round`, over warm connections; each host on
its own, a few at once, on a plane without it), with a short deadline. A host that does not
answer leaves the round, so it holds the others up once and never long enough to make them look
silent, and is asked again on its own with its whole deadline, then with a short backoff, by a
small pool, until it answers; then it rejoins (core.rounds). `refresh()` does one round of
every host at once instead (one-off commands, and tests with a fake plane and a fake clock); a
host is then judged as of its last answer or failure, not by how long the round took. Whoever
wants to know of changes (a unit's state, a host's state or boot) passes `on_change`.

Between rounds, a host whose watch (hosts.watching, on planes that have one) says a task's unit
ended is sampled at once, so the end is seen in milliseconds rather than at the next round.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from meso_agentless.controller.clock import Clock
from meso_agentless.controller.unitstatus import UnitStatus, same_units, units_map
from meso_agentless.core.health import HostState, host_state
from meso_agentless.core.rounds import Retries, round_deadline
from meso_agentless.errors import MesoError
from meso_agentless.hosts.plane import NodeRefused, Plane, each_host
from meso_agentless.hosts.watching import Watches

log = logging.getLogger("meso.fleet")
Answer = dict | Exception  # a host's sample, or why it has none
MAX_RETRYING = 16  # hosts out of the round asked at once, each on its own (a pool's threads)
CHECK_TICK = 0.5  # how often the checker looks for due health checks
STATE_TICK = 0.25  # how often silence is weighed: a host turns suspect or unreachable on time
ENDS_GATHER = 0.005  # after a watch says a unit ended: the other ends of a burst come along
ENDS_SPACING = 0.5  # at least this between two samples for ends (each may set off a cycle)


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
    digest: str | None = None  # the node's digest of `units` (its samples then leave them out)


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
        watch: bool = False,
    ) -> None:
        self.plane = plane
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self.suspect_after = suspect_after
        self.unreachable_after = unreachable_after
        self.on_change = on_change or (lambda: None)
        self.watch = watch  # each host's watch, on planes that have one (start())
        self._records = {h: _Record() for h in plane.hosts}
        self._checks: dict[str, dict[str, Check]] = {}  # host -> unit -> check
        self._sample_fields: dict[str, dict] = {}  # host -> what its samples carry
        self._health: dict[str, HealthResult] = {}  # unit -> result
        self._due: dict[str, float] = {}  # unit -> monotonic time its next check is due
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._retries = Retries(interval)  # hosts out of the round (its own thread asks them)
        self._retry_wake = threading.Event()  # a host left the round, or failed again
        self._retrying: ThreadPoolExecutor | None = None
        self._turn = -math.inf  # no host's state changes by silence alone before this
        self._watches: Watches | None = None
        self._ended: set[str] = set()  # hosts whose watch said a unit ended since last asked
        self._ended_wake = threading.Event()
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
        state = self._state(r, now)
        health = {u: self._health.get(u, NOT_CHECKED) for u in self._checks.get(name, {})}
        return HostView(name, state, r.facts, r.units, r.asked, r.seen, r.error, health, r.marks)

    def _state(self, r: _Record, now: float) -> HostState:
        if not self._threads:  # refreshed by hand: judged as of its last answer or failure
            now = max(r.ok_at or 0.0, r.failed_at or 0.0)
        state = host_state(r.ok_at, r.failed_at, now, self.suspect_after, self.unreachable_after)
        if state in (HostState.UP, HostState.SUSPECT) and r.facts.get("system") == "stopping":
            state = HostState.STOPPING
        return state

    def states(self) -> dict[str, HostState]:
        """Every host's state now (views() without the rest: cheap enough to ask often)."""
        now = self.clock.monotonic()
        with self._lock:
            return {name: self._state(r, now) for name, r in self._records.items()}

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
        """One round of every host, then the health checks that are due."""
        self.sample_hosts(list(self._records), self.timeout, self._sampled)
        self.run_checks()

    def sample_hosts(
        self, hosts: list[str], timeout: float, answered: Callable[[str, float, Answer], None]
    ) -> None:
        """`hosts` sampled at once, with one deadline, each answer (or why none) handed to
        `answered`: pipelined where the plane can (one round trip for all warm hosts), else each
        host on its own, a few at once."""
        start = self.clock.monotonic()
        sample_round = getattr(self.plane, "sample_round", None)
        if sample_round is None:
            each_host(hosts, lambda host: answered(host, *self._ask(host, timeout)))
        else:
            with self._lock:
                fields = {h: self._fields(h) for h in hosts}
            for host, answer in sample_round(fields, timeout=timeout).items():
                answered(host, start, answer)
        self.round_seconds(self.clock.monotonic() - start)

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
        self._sampled(host, *self._ask(host, self.timeout))

    def _ask(self, host: str, timeout: float) -> tuple[float, Answer]:
        """When `host` was asked for a sample, and its answer (or why none)."""
        asked = self.clock.monotonic()
        with self._lock:
            fields = self._fields(host)
        try:
            return asked, self.plane.sample(host, timeout=timeout, **fields)
        except Exception as exc:  # judged by whoever takes the answer
            return asked, exc

    def _fields(self, host: str) -> dict:
        """What a sample of `host` carries: its fields, and the digest of the units held from
        it (the lock is held)."""
        fields = self._sample_fields.get(host, {})
        digest = self._records[host].digest
        return fields if digest is None else {**fields, "units_digest": digest}

    def _in_round(self, host: str, asked: float, answer: Answer) -> None:
        """A round's answer; a host that gave none leaves the round, asked again on its own at
        once, with its whole deadline (what that try says is recorded)."""
        if isinstance(answer, Exception):
            with self._lock:
                self._retries.late(host, self.clock.monotonic())
            self._retry_wake.set()
        else:
            self._sampled(host, asked, answer)

    def _sampled(self, host: str, asked: float, answer: Answer) -> None:
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
            before = (self._state(r, now), r.facts.get("boot"), r.marks)
            if facts is not None and not self._current(r, asked, facts):
                r.digest = None  # the next sample brings the units whole
                facts = error = None
                self._retries.answered(host)  # it answers: in the next round, recorded then
            if facts is not None:
                # the units are kept compact in r.units only, not in the facts as well
                digest = facts.pop("units_digest", None)
                if facts.pop("same_units", False):  # the node holds the units we hold
                    units, same = None, facts.get("runs") == r.facts.get("runs")
                else:
                    units = facts.pop("units", None)
                    units = units if isinstance(units, list) else []
                    same = facts.get("runs") == r.facts.get("runs") and same_units(units, r.units)
                r.facts, r.ok_at, r.asked, r.seen = facts, now, asked, self.clock.time()
                if not same:  # else as last time: the map and marks stay
                    if units is not None:
                        r.units = units_map(units, unit_key)
                    r.marks = hash((_signature(r.units), _runs_signature(r.facts)))
                r.digest = digest if isinstance(digest, str) else None
                if r.failures and self._watches is not None:  # back: its watch too
                    self._watches.add([host])
                    self._watches.back(host)
                r.error, r.failures = None, 0
                self._retries.answered(host)
                self._turn = min(self._turn, now + self.suspect_after)
            elif error is not None:
                r.failed_at, r.error = now, error
                r.failures += 1
                self._retries.failed(host, asked)
                self._retry_wake.set()
            r.rounds += 1
            after = (self._state(r, now), r.facts.get("boot"), r.marks)
            self._lock.notify_all()
        if after != before:
            self.on_change()

    @staticmethod
    def _current(r: _Record, asked: float, facts: Mapping) -> bool:
        """Whether a good sample asked at `asked` may be recorded: not older than the one
        recorded (a reader never overwrites a newer state), and, if it left its units out, said
        so of the units held now (a newer answer may have changed them since it was asked)."""
        if r.asked is not None and asked < r.asked:
            return False
        return not facts.get("same_units") or facts.get("units_digest") == r.digest

    def start(self) -> None:
        """Sample the answering hosts every `interval` in rounds, each failing host on its own
        until it answers again, and run the health checks as they fall due, until stop(). The
        threads are a few, however many the hosts."""
        self._stopping.clear()
        with self._lock:
            self._retries = Retries(self.interval)  # every host is asked in the first round,
            for host, r in self._records.items():  # but one that failed its last request (a
                if r.failures:  # refresh() before): on its own, and holds no round up
                    self._retries.failed(host, r.failed_at or self.clock.monotonic())
        self._retrying = ThreadPoolExecutor(MAX_RETRYING, thread_name_prefix="retry")
        watch_channel = getattr(self.plane, "watch_channel", None)
        if self.watch and watch_channel is not None:
            self._watches = Watches(watch_channel, self._unit_ended)
            self._watches.start()
        loops = {"sampler": self._round_loop, "retries": self._retry_loop,
                 "health": self._check_loop, "silence": self._state_loop}  # fmt: skip
        for name, target in loops.items():
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _round_loop(self) -> None:
        """A round every interval; a round that fails (a bug, a transport error let through)
        is logged and the next one comes: the sampler never stops while the fleet runs."""
        while not self._stopping.is_set():
            start = self.clock.monotonic()
            try:
                self._round(start)
            except Exception:
                log.exception("a sample round failed")
                self._stopping.wait(max(0.0, start + self.interval - self.clock.monotonic()))

    def _round(self, start: float) -> None:
        """One round of the answering hosts, then the time until the next (ends sampled)."""
        with self._lock:
            hosts = self._retries.in_round(self._records)
            connecting = any(self._records[h].ok_at is None
                             and self._records[h].failed_at is None for h in hosts)  # fmt: skip
        deadline = round_deadline(self.timeout, self.interval, self.suspect_after, connecting)
        with self._lock:
            self._ended.clear()  # this round answers the ends told so far
        self._ended_wake.clear()
        self.sample_hosts(hosts, deadline, self._in_round)
        if self._watches is not None:
            with self._lock:
                answering = [h for h in hosts if not self._records[h].failures]
            self._watches.add(answering)
        self._between_rounds(start + self.interval)

    def _unit_ended(self, host: str) -> None:
        """A host's watch said a unit ended there (from the watches' thread)."""
        with self._lock:
            self._ended.add(host)
        self._ended_wake.set()

    def _between_rounds(self, until: float) -> None:
        """Until the next round is due: each host whose watch says a unit ended is sampled at
        once (those out of the round are being asked on their own already)."""
        last = -math.inf
        while not self._stopping.is_set():
            left = until - self.clock.monotonic()
            if left <= 0 or not self._ended_wake.wait(left) or self._stopping.is_set():
                return
            # many ends (a batch job's) come together: at most one such sample per spacing
            now = self.clock.monotonic()
            self._stopping.wait(min(max(ENDS_GATHER, last + ENDS_SPACING - now), until - now))
            if self.clock.monotonic() >= until:
                return  # the round asks them all
            self._ended_wake.clear()
            with self._lock:
                hosts = sorted(h for h in self._ended if not self._records[h].failures)
                self._ended.clear()
            if hosts:
                deadline = round_deadline(self.timeout, self.interval, self.suspect_after, False)
                self.sample_hosts(hosts, deadline, self._in_round)
                last = self.clock.monotonic()

    def _retry_loop(self) -> None:
        """Each host out of the round asked again when its backoff is over (core.rounds)."""
        while not self._stopping.is_set():
            with self._lock:
                due = self._retries.take_due(self.clock.monotonic())
                next_due = self._retries.next_due()
            for host in due:
                self._retrying.submit(self.sample_one, host)  # type: ignore[union-attr]
            pause = self.interval if next_due is None else next_due - self.clock.monotonic()
            self._retry_wake.wait(min(self.interval, max(0.0, pause)))
            self._retry_wake.clear()

    def _check_loop(self) -> None:
        while not self._stopping.wait(CHECK_TICK):
            self.run_checks()

    def _state_loop(self) -> None:
        """A host that stays silent changes state with no answer to tell of it: look often,
        and at every host once one of them may have (its silence past a threshold)."""
        states = self._silent_states()
        while not self._stopping.wait(STATE_TICK):
            with self._lock:
                if self.clock.monotonic() < self._turn:
                    continue  # nobody's silence has passed a threshold since the last look
            now = self._silent_states()
            if now != states:
                states = now
                self.on_change()

    def _silent_states(self) -> dict[str, HostState]:
        """states(), and when silence may next change one (`_turn`): the earliest threshold
        (suspect_after, unreachable_after) still ahead of a host's last answer."""
        now = self.clock.monotonic()
        turn = math.inf
        with self._lock:
            for r in self._records.values():
                if r.ok_at is not None:
                    for due in (r.ok_at + self.suspect_after, r.ok_at + self.unreachable_after):
                        if now < due:
                            turn = min(turn, due)
                            break
            self._turn = turn
            return {name: self._state(r, now) for name, r in self._records.items()}

    def stop(self) -> None:
        self._stopping.set()
        self._retry_wake.set()
        self._ended_wake.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 1)
        if self._retrying is not None:  # a try under way ends by its deadline
            self._retrying.shutdown(wait=True, cancel_futures=True)
            self._retrying = None
        if self._watches is not None:
            self._watches.stop()
            self._watches = None
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
