"""A simulated fleet of thousands of hosts in one process, for scale tests and benchmarks.

`SimPlane` is `FakePlane` (the node command's verbs, answered in memory) made to hold many
hosts: units are found by name at once, no call log grows, tasks end by themselves once their
duration has passed on the clock (`sleep N` runs N seconds; see `sleep_duration`), and the CPU
the fake itself spends is counted (`cpu_seconds`) so a benchmark can tell it from the
controller's (answers are decoded from JSON by the caller, as the SSH transport does).
`sim_cluster` puts the real controller (SQLite or PostgreSQL store, allocator,
loop) on top of it, unchanged:

    cluster = sim_cluster(tmp_path, hosts=1000)
    cluster.controller.submit(job)
    cluster.step()                      # every host sampled, then one controller cycle
    cluster.plane.cut("h0042"); cluster.plane.reboot("h0043")
    cluster = cluster.restarted()       # a new controller on the same store and hosts
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from meso_agentless.core.model import Framework
from meso_agentless.errors import MesoError
from meso_agentless.testing.fakes import FakeClock, FakeCluster, FakeHost, FakePlane, FakeUnit

Duration = Callable[[Mapping], float | None]


def sleep_duration(request: Mapping) -> float | None:
    """How long a launched task runs: N seconds for `sleep N`; None (until stopped) otherwise."""
    argv = request.get("argv") or []
    if len(argv) == 2 and argv[0] in ("sleep", "/bin/sleep"):
        try:
            return float(argv[1])
        except ValueError:
            return None
    return None


def host_names(count: int) -> list[str]:
    """h00001, h00002, ...: names that sort in order."""
    width = max(4, len(str(count)))
    return [f"h{i:0{width}d}" for i in range(1, count + 1)]


class SimPlane(FakePlane):
    """Many fake hosts behind the plane's verbs; units end after their duration."""

    def __init__(
        self,
        hosts: Mapping[str, FakeHost],
        clock: FakeClock | None = None,
        duration: Duration = sleep_duration,
    ) -> None:
        super().__init__(hosts, clock)
        self.calls = deque(maxlen=0)  # type: ignore[assignment]  # no log of every call
        self.duration = duration
        self.ends: dict[str, float] = {}  # unit -> monotonic time its process exits
        self._first_end: dict[str, float] = {}  # host -> no unit of it exits before this
        self.cpu_seconds = 0.0  # what the fake itself spent answering (thread CPU time)
        self._located: dict[str, str] = {}  # unit -> host it was launched on
        self._listed: dict[str, tuple[tuple, list[dict], str]] = {}  # host -> its units' key,
        # statuses and digest as last listed (a unit's request is never changed in place)
        self._cpu_lock = threading.Lock()

    @classmethod
    def of(
        cls,
        count: int,
        cpus: int = 16,
        mem: int = 64 << 30,
        clock: FakeClock | None = None,
        duration: Duration = sleep_duration,
    ) -> SimPlane:
        """`count` alike hosts named by host_names."""
        return cls({n: FakeHost(n, cpus, mem) for n in host_names(count)}, clock, duration)

    @contextmanager
    def _spending(self) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self._cpu_lock:
                self.cpu_seconds += spent

    def _host(self, name: str) -> FakeHost:
        host = super()._host(name)
        self._exit_due(host)
        return host

    def _exit_due(self, host: FakeHost) -> None:
        """Units whose duration has passed have exited 0 (RemainAfterExit keeps the result)."""
        now = self.clock.monotonic()
        if self._first_end.get(host.name, -math.inf) > now:
            return
        first = math.inf
        for unit in host.units.values():
            end = self.ends.get(unit.name)
            if end is not None and end <= now and unit.state == "running":
                unit.state, unit.exit_code = "finished", 0
                del self.ends[unit.name]
            elif end is not None:
                first = min(first, end)
        self._first_end[host.name] = first

    def _ends(self, host: str, unit: str, seconds: float) -> None:
        """`unit` of `host` exits `seconds` from now."""
        end = self.ends[unit] = self.clock.monotonic() + seconds
        self._first_end[host] = min(end, self._first_end.get(host, math.inf))

    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict:
        with self._spending():
            line = json.dumps(super().sample(host, timeout, **fields))
        return json.loads(line)  # decoding a node's answer is the controller's work, as over SSH

    def _units(self, h: FakeHost) -> tuple[list[dict], str]:
        """As FakePlane's, listed again only when a unit's state has changed (the node's own
        work: a real node reads its units every time; here the simulated hosts' CPU would
        crowd out the controller's in the one process)."""
        key = tuple((id(u), u.state, u.exit_code, u.signal, u.reason, u.restarts, u.kind)
                    for u in h.units.values())  # fmt: skip
        listed = self._listed.get(h.name)
        if listed is None or listed[0] != key:
            listed = self._listed[h.name] = (key, *super()._units(h))
        return listed[1], listed[2]

    def sample_round(
        self, fields: Mapping[str, Mapping], timeout: float | None = None
    ) -> dict[str, dict | MesoError]:
        """Every host of `fields` sampled, each answer or why not, as ExecutionPlane's round
        (one thread, no pool: the controller's own cost, as with pipelined requests)."""
        answers: dict[str, dict | MesoError] = {}
        for host, its in fields.items():
            try:
                answers[host] = self.sample(host, timeout, **its)
            except MesoError as exc:
                answers[host] = exc
        return answers

    def launch(self, host: str, request: dict, timeout: float | None = None) -> dict:
        with self._spending(), self._lock:
            answer = super().launch(host, request, timeout)
            unit = request["unit"]
            if not answer.get("existed"):
                self._located[unit] = host
                seconds = self.duration(request)
                if seconds is not None:
                    self._ends(host, unit, seconds)
            return answer

    def stop(self, host: str, unit: str, timeout: float | None = None, wait: bool = True) -> dict:
        with self._spending(), self._lock:
            self.ends.pop(unit, None)
            return super().stop(host, unit, timeout, wait)

    def forget(self, host: str, unit: str, timeout: float | None = None) -> dict:
        with self._spending():
            return super().forget(host, unit, timeout)

    def status(self, host: str, unit: str, timeout: float | None = None) -> dict:
        with self._spending():
            return super().status(host, unit, timeout)

    def where(self, unit: str) -> str | None:
        with self._lock:
            host = self._located.get(unit)
            if host is not None and unit in self.by_name[host].units:
                return host
            self._located.pop(unit, None)
            return None

    def reboot(self, host: str) -> None:
        with self._lock:
            for unit in self.by_name[host].units:
                self.ends.pop(unit, None)
            super().reboot(host)

    def place(self, host: str, unit: FakeUnit, seconds: float | None = None) -> None:
        """Put a unit on a host as if it had been launched there (a fleet that runs already)."""
        with self._lock:
            self.by_name[host].units[unit.name] = unit
            self._located[unit.name] = host
            self.started[unit.name] += 1
            if seconds is not None:
                self._ends(host, unit.name, seconds)

    def units(self) -> dict[str, str]:
        """unit -> host, for every unit loaded on a host (running or ended)."""
        with self._lock:
            return {u: h.name for h in self.by_name.values() for u in h.units}


def sim_cluster(
    directory: Path,
    hosts: int,
    cpus: int = 16,
    mem: int = 64 << 30,
    frameworks: tuple[Framework, ...] = (),
    state: str | None = None,
    duration: Duration = sleep_duration,
    **controller_options: float,
) -> FakeCluster:
    """The real controller on `hosts` simulated hosts (each `cpus` cores and `mem` bytes)."""
    clock = FakeClock()
    plane = SimPlane.of(hosts, cpus, mem, clock, duration)
    return FakeCluster.on(directory, plane, frameworks, state, **controller_options)
