"""An in-memory fleet for testing the controller (and your own frameworks) without a lab.

`FakePlane` answers the node command's verbs for scripted hosts: capacity, units that start,
end, crash or vanish, hosts that are cut off or reboot, launches that are refused. `FakeClock`
moves only when told. `FakeCluster` puts a real controller (SQLite store, allocator, decisions)
on top of them, the way Nomad's scheduler tests run on a harness:

    cluster = FakeCluster.of(tmp_path, hosts={"h1": (4, "8GiB"), "h2": (4, "8GiB")})
    cluster.controller.submit(job)
    cluster.step()                       # sample every host, then one controller cycle
    cluster.plane.finish("meso-j_t_0_1", exit_code=0)
    cluster.step()
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meso_agentless.controller.events import Event, EventBus
from meso_agentless.controller.fleet import Fleet
from meso_agentless.controller.loop import Controller
from meso_agentless.core.model import Framework
from meso_agentless.core.resources import parse_size
from meso_agentless.hosts.plane import NodeRefused, Unreachable
from meso_agentless.inventory import Inventory, Node
from meso_agentless.node.nodecmd import (
    UNIT_NAME,
    RequestError,
    known_digest,
    units_digest,
    without_known_units,
)
from meso_agentless.state.postgres import open_store


class FakeClock:
    """A monotonic and a wall clock that move only with advance()."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._now + 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class FakeUnit:
    name: str
    request: dict
    state: str = "running"
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    restarts: int = 0
    healthy: bool = True
    health_detail: str = "HTTP 200"
    kind: str = "service"  # or "timer": a cron job's, which holds nothing between runs

    def status(self) -> dict:
        timer = self.kind == "timer"
        return {"unit": f"{self.name}.{'timer' if timer else 'service'}", "state": self.state,
                "exit_code": self.exit_code, "signal": self.signal, "reason": self.reason,
                "restarts": self.restarts, **({"kind": "timer"} if timer else {}),
                "millicpus": None if timer else self.request.get("cpus"),
                "memory_max": None if timer else self.request.get("mem"),
                "description": self.request.get("description", self.name),
                "active": "active" if self.state in ("running", "staging") else "inactive",
                "sub": "running" if self.state in ("running", "staging") else "exited"}  # fmt: skip


@dataclass
class FakeHost:
    name: str
    cpus: int = 4
    mem: int = 8 << 30
    disk: int = 100 << 30
    reachable: bool = True
    boot: str = field(default_factory=lambda: uuid.uuid4().hex)
    units: dict[str, FakeUnit] = field(default_factory=dict)
    refuse: str | None = None  # every launch is refused with this reason
    system: str = "running"  # systemd's own state; "stopping" while it shuts down
    runs: dict[str, FakeUnit] = field(default_factory=dict)  # cron runs' units, by name
    records: dict[str, list[dict]] = field(default_factory=dict)  # timer -> its run records
    leases: dict[str, float] = field(default_factory=dict)  # timer -> renewed (monotonic)
    launched: dict[str, float] = field(default_factory=dict)  # timer -> made (monotonic)
    epochs: dict[str, int] = field(default_factory=dict)  # state -> highest epoch seen


class FakePlane:
    """Scripted hosts behind the same verbs as the SSH plane; thread-safe."""

    def __init__(self, hosts: Mapping[str, FakeHost], clock: FakeClock | None = None) -> None:
        self.by_name = dict(hosts)
        self.clock = clock or FakeClock()
        self.sample_fields: dict[str, dict] = {}  # host -> what its last sample carried
        self.started: Counter[str] = Counter()  # unit -> how many times it was started
        self.calls: list[tuple[str, str, str]] = []  # (verb, host, unit)
        # (state identity, epoch): sent with what changes a host (several controllers)
        self.fence: tuple[str, int] | None = None
        self._lock = threading.RLock()

    def sharing(self) -> FakePlane:
        """Another controller's plane on the same hosts (its own epoch; starts counted
        together)."""
        other = FakePlane(self.by_name, self.clock)
        other.started = self.started
        other._lock = self._lock
        return other

    def _fence(self, h: FakeHost) -> None:
        """As the node command: a lower epoch than the highest seen is refused."""
        if self.fence is None:
            return
        state, epoch = self.fence
        seen = h.epochs.get(state, 0)
        if epoch < seen:
            raise NodeRefused(f"{h.name}: epoch: {epoch} is older than {seen}, the newest "
                              "controller's seen by this host")  # fmt: skip
        h.epochs[state] = epoch

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def _host(self, name: str) -> FakeHost:
        host = self.by_name[name]
        if not host.reachable:
            raise Unreachable(f"{name}: timed out (cut off)")
        return host

    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict:
        with self._lock:
            h = self._host(host)
            self.calls.append(("sample", host, ""))
            try:  # as the node command: a sample's units left out if the caller holds them
                known = known_digest(fields.get("units_digest"))
            except RequestError as exc:
                raise NodeRefused(f"{host}: {exc}") from None
            self.sample_fields[host] = dict(fields)
            leases = fields.get("leases")
            if isinstance(leases, dict):  # as the node command: these timers, and only these
                now = self.clock.monotonic()
                h.leases = {unit: now for unit in leases.get("units", [])}
            after = fields.get("after") if isinstance(fields.get("after"), dict) else {}
            answer = {"hostname": host, "cpus": h.cpus, "mem_total": h.mem, "mem_available": h.mem,
                    "disk_total": h.disk, "disk_available": h.disk, "load": [0.0, 0.0, 0.0],
                    "boot_id": h.boot, "boot": h.boot, "cgroup": "v2", "systemd": 252,
                    "system": h.system, "units": None,
                    "runs": self._reports(h, after)}  # type: ignore[arg-type]  # fmt: skip
            answer["units"], digest = self._units(h)
            return without_known_units(answer, known, digest)

    def _units(self, h: FakeHost) -> tuple[list[dict], str]:
        """A host's unit statuses as a sample lists them, and their digest."""
        units = [u.status() for u in h.units.values()]
        return units, units_digest(units)

    def launch(self, host: str, request: dict, timeout: float | None = None) -> dict:
        with self._lock:
            h = self._host(host)
            unit = request["unit"]
            self.calls.append(("launch", host, unit))
            self._fence(h)
            if not UNIT_NAME.match(unit):
                raise NodeRefused(f"{host}: unit: {unit!r} is not a meso unit name")
            if unit in h.units:
                return {**h.units[unit].status(), "existed": True}
            if h.refuse:
                raise NodeRefused(f"{host}: {h.refuse}")
            if "schedule" in request:  # a cron job's timer: it must fit, it holds nothing yet
                if (request.get("cpus") or 0) > h.cpus * 1000:
                    raise NodeRefused(f"{host}: admission: cpus would exceed the host's capacity")
                h.units[unit] = FakeUnit(unit, dict(request), kind="timer")
                h.launched[unit] = self.clock.monotonic()
                self.started[unit] += 1
                return {**h.units[unit].status(), "existed": False}
            held = self._held(h)
            if held + (request.get("cpus") or 0) > h.cpus * 1000:
                raise NodeRefused(f"{host}: admission: cpus would exceed the host's capacity")
            h.units[unit] = FakeUnit(unit, dict(request))
            self.started[unit] += 1
            return {**h.units[unit].status(), "existed": False}

    def status(self, host: str, unit: str, timeout: float | None = None) -> dict:
        with self._lock:
            found = self._host(host).units.get(unit)
            return found.status() if found else {"unit": f"{unit}.service", "state": "unknown"}

    def stop(self, host: str, unit: str, timeout: float | None = None, wait: bool = True) -> dict:
        with self._lock:
            h = self._host(host)
            self.calls.append(("stop", host, unit))
            self._fence(h)
            found = h.units.pop(unit, None)
            if found is not None and found.kind == "timer":  # its runs are stopped with it
                for run in list(h.runs.values()):
                    if run.request.get("timer") == unit and run.state == "running":
                        self._append(h, unit, {"run": run.name, "state": "killed",
                                               "reason": "stopped with its timer"})  # fmt: skip
                        del h.runs[run.name]
            if found is None:
                return {"unit": f"{unit}.service", "state": "unknown"}
            status = found.status()
            if found.state in ("running", "staging"):
                status.update(state="killed", signal=15)
            return status

    def forget(self, host: str, unit: str, timeout: float | None = None) -> dict:
        with self._lock:
            h = self._host(host)
            self._fence(h)
            if unit in h.runs:
                if h.runs[unit].state == "running":
                    raise NodeRefused(f"{host}: unit: {unit} is still running; stop it instead")
                self.calls.append(("forget", host, unit))
                return h.runs.pop(unit).status()
            found = h.units.get(unit)
            if found is None:
                return {"unit": f"{unit}.service", "state": "unknown"}
            if found.state in ("running", "staging"):
                raise NodeRefused(f"{host}: unit: {unit} is still {found.state}; stop it instead")
            self.calls.append(("forget", host, unit))
            return h.units.pop(unit).status()

    def forget_many(self, host: str, units: Sequence[str], timeout: float | None = None) -> dict:
        """forget of several units in one request, as the node command answers it: one still
        running is left, with an error."""
        with self._lock:
            self._fence(self._host(host))
            self.calls.append(("forget_many", host, tuple(units)))
            out = {}
            for unit in units:
                try:
                    out[unit] = self.forget(host, unit, timeout)
                except NodeRefused as exc:
                    out[unit] = {"unit": f"{unit}.service", "state": "running", "error": str(exc)}
            return out

    def health(self, host: str, request: dict, timeout: float | None = None) -> dict:
        with self._lock:
            found = self._host(host).units.get(request["unit"])
            self.calls.append(("health", host, request["unit"]))
            if found is None or found.state != "running":
                return {"healthy": False, "detail": "not running"}
            return {"healthy": found.healthy, "detail": found.health_detail}

    def logs(
        self,
        host: str,
        unit: str,
        follow: bool = False,
        lines: int = 1000,
        since: int | None = None,
    ) -> Iterator[bytes]:
        with self._lock:
            self._host(host)
            yield f"{unit} on {host}\n".encode()

    def trigger(
        self, host: str, unit: str, timeout: float | None = None, scheduled: int | None = None
    ) -> dict:
        with self._lock:
            self._fence(self._host(host))
            self.calls.append(("trigger", host, unit))
            if scheduled is not None:
                return self.fire(unit, scheduled=scheduled, kind="catch-up")
            return self.fire(unit, kind="trigger")

    def close(self) -> None:
        pass

    # -- cron timers, as the node command keeps them ---------------------------------------------

    def fire(self, unit: str, scheduled: int | None = None, kind: str = "schedule") -> dict:
        """The host's systemd fires a cron timer (reachable or not: it is the host's own
        doing): the lease, concurrency and admission decide, and a record says what happened."""
        with self._lock:
            host = self.where(unit)
            if host is None:
                raise KeyError(unit)
            h = self.by_name[host]
            timer = h.units[unit]
            request = timer.request
            fired = self.clock.time()
            if kind in ("schedule", "catch-up"):
                scheduled = int(fired) if scheduled is None else scheduled
                run = f"{unit}-r{scheduled}"
            else:
                scheduled, run = None, f"{unit}-t{int(fired * 1000)}"
            record = {"run": run, "kind": kind, "scheduled": scheduled, "fired": fired}
            times = [t for t in (h.leases.get(unit), h.launched.get(unit)) if t is not None]
            lapsed = not times or self.clock.monotonic() - max(times) > request["lease_sec"]
            if kind == "schedule" and lapsed:
                return self._append(h, unit, {**record, "state": "skipped",
                                              "reason": "lease lapsed"})  # fmt: skip
            if run in h.runs:
                return {**h.runs[run].status(), "existed": True, "run": run}
            running = [r for r in h.runs.values()
                       if r.request.get("timer") == unit and r.state == "running"]  # fmt: skip
            if running and request.get("concurrency", "forbid") == "forbid":
                return self._append(h, unit, {**record, "state": "skipped",
                                              "reason": f"forbid: {running[0].name} is still "
                                              "running"})  # fmt: skip
            if request.get("concurrency") == "replace":
                for old in running:
                    self._append(h, unit, {"run": old.name, "state": "killed",
                                           "reason": f"replaced by {run}"})  # fmt: skip
                    del h.runs[old.name]
            if self._held(h) + (request.get("cpus") or 0) > h.cpus * 1000:
                return self._append(h, unit, {**record, "state": "skipped", "reason":
                                              "admission: cpus would exceed the host's "
                                              "capacity"})  # fmt: skip
            h.runs[run] = FakeUnit(run, {**request, "unit": run, "timer": unit})
            self.started[run] += 1
            return self._append(h, unit, {**record, "state": "started"})

    def finish_run(self, run: str, exit_code: int = 0) -> None:
        """A cron run's process exits (its unit keeps the result until forgotten)."""
        with self._lock:
            for h in self.by_name.values():
                if run in h.runs:
                    u = h.runs[run]
                    u.state, u.exit_code = ("finished" if exit_code == 0 else "failed"), exit_code
                    return
            raise KeyError(run)

    def runs_of(self, unit: str) -> list[dict]:
        """Every record of a timer on every host (what happened there, for assertions)."""
        with self._lock:
            return [r for h in self.by_name.values() for r in h.records.get(unit, [])]

    def _held(self, h: FakeHost) -> int:
        units = [*h.units.values(), *h.runs.values()]
        return sum(u.request.get("cpus") or 0 for u in units
                   if u.kind != "timer" and u.state in ("running", "staging"))  # fmt: skip

    def _append(self, h: FakeHost, timer: str, record: dict) -> dict:
        records = h.records.setdefault(timer, [])
        record = {"seq": len(records) + 1, "timer": timer, **record}
        records.append(record)
        return record

    def _reports(self, h: FakeHost, after: Mapping[str, int]) -> list[dict]:
        """As the node command's run_reports."""
        out: dict[str, dict] = {}
        for timer, records in h.records.items():
            latest: dict[str, dict] = {}
            for record in records:
                latest[record["run"]] = {**latest.get(record["run"], {}), **record}
            fresh = {r["run"] for r in records if r["seq"] > after.get(timer, 0)}
            for key, report in latest.items():
                unit = h.runs.get(key)
                if key not in fresh and unit is None:
                    continue
                report = {**report, "loaded": unit is not None}
                if unit is None and report.get("state") == "started":
                    report["state"] = "gone"
                if unit is not None:
                    report.update(state=unit.state, exit_code=unit.exit_code,
                                  millicpus=unit.request.get("cpus"),
                                  memory_max=unit.request.get("mem"))  # fmt: skip
                out[key] = report
        return list(out.values())

    # -- scripting -----------------------------------------------------------------------------

    def where(self, unit: str) -> str | None:
        with self._lock:
            return next((h.name for h in self.by_name.values() if unit in h.units), None)

    def running(self) -> dict[str, str]:
        """unit -> host, for every unit that runs."""
        with self._lock:
            return {u.name: h.name for h in self.by_name.values() for u in h.units.values()
                    if u.state in ("running", "staging")}  # fmt: skip

    def finish(self, unit: str, exit_code: int = 0) -> None:
        """The unit's main process exits (RemainAfterExit keeps its result)."""
        with self._lock:
            u = self._unit(unit)
            u.state, u.exit_code = ("finished" if exit_code == 0 else "failed"), exit_code

    def set_health(self, unit: str, healthy: bool, detail: str = "") -> None:
        """What the unit's health check will answer from now on."""
        with self._lock:
            u = self._unit(unit)
            u.healthy, u.health_detail = healthy, detail or ("HTTP 200" if healthy else "refused")

    def crash(self, unit: str) -> None:
        """A service instance dies; systemd restarts it on its host (Restart=always)."""
        with self._lock:
            self._unit(unit).restarts += 1

    def vanish(self, unit: str) -> None:
        """Someone stopped and unloaded the unit behind the controller's back."""
        with self._lock:
            host = self.where(unit)
            if host is not None:
                del self.by_name[host].units[unit]

    def cut(self, host: str) -> None:
        with self._lock:
            self.by_name[host].reachable = False

    def heal(self, host: str) -> None:
        with self._lock:
            self.by_name[host].reachable = True

    def shut_down(self, host: str) -> None:
        """It begins to shut down: its units are stopped and unloaded, it still answers."""
        with self._lock:
            h = self.by_name[host]
            h.system, h.units = "stopping", {}
            h.refuse = "not started: the host is stopping"

    def reboot(self, host: str) -> None:
        """A new boot identity; transient units are gone (run records stay, on disk)."""
        with self._lock:
            h = self.by_name[host]
            h.boot, h.units, h.runs, h.leases, h.launched = uuid.uuid4().hex, {}, {}, {}, {}
            h.system, h.refuse = "running", None

    def _unit(self, unit: str) -> FakeUnit:
        host = self.where(unit)
        if host is None:
            raise KeyError(unit)
        return self.by_name[host].units[unit]


@dataclass
class FakeCluster:
    """A real controller on a fake plane, with a fake clock and a real SQLite store."""

    controller: Controller
    plane: FakePlane
    clock: FakeClock
    fleet: Fleet
    events: EventBus
    seen: list[Event]
    state: str = ""  # the store's SQLite path or postgresql:// URL
    options: dict = field(default_factory=dict)  # the controller's options

    @classmethod
    def of(
        cls,
        directory: Path,
        hosts: Mapping[str, tuple[int, str]],
        frameworks: tuple[Framework, ...] = (),
        state: str | None = None,
        **controller_options: float,
    ) -> FakeCluster:
        """`hosts`: name -> (cpus, mem); `state`: a postgresql:// URL or a SQLite path (by
        default state.db in `directory`)."""
        clock = FakeClock()
        plane = FakePlane({name: FakeHost(name, cpus, parse_size(mem, "mem"))
                           for name, (cpus, mem) in hosts.items()}, clock)  # fmt: skip
        return cls.on(directory, plane, frameworks, state, **controller_options)

    @classmethod
    def on(
        cls,
        directory: Path,
        plane: FakePlane,
        frameworks: tuple[Framework, ...] = (),
        state: str | None = None,
        **controller_options: float,
    ) -> FakeCluster:
        """A controller on these fake hosts (every host of the plane is in its inventory)."""
        state = state or str(directory / "state.db")
        clock = plane.clock
        nodes = tuple(Node(name, address=name) for name in plane.hosts)
        inventory = Inventory("fake", nodes, frameworks)
        events = EventBus(clock.time)
        seen: list[Event] = []
        events.subscribe(callback=seen.append)
        fleet = Fleet(plane, clock)
        store = open_store(state, clock=clock.time)
        controller = Controller(store, inventory, plane, fleet, clock, events,
                                **controller_options)  # type: ignore[arg-type]  # fmt: skip
        return cls(controller, plane, clock, fleet, events, seen, state, dict(controller_options))

    def restarted(self) -> FakeCluster:
        """A new controller process on the same state and hosts (this one is dropped, the
        tasks on the hosts run on): it knows only what the store and the hosts say."""
        self.controller.store.close()
        frameworks = self.controller.inventory.frameworks
        return FakeCluster.on(Path(), self.plane, frameworks, self.state, **self.options)

    def step(self, seconds: float = 1.0) -> None:
        """Time passes, every host is sampled, and the controller runs one cycle."""
        self.clock.advance(seconds)
        self.fleet.refresh()
        self.controller.tick()

    def states(self, job: str) -> dict[tuple[str, int, int], str]:
        """(task, index, attempt) -> state, as stored."""
        return {(r.task, r.index, r.attempt): r.state.value
                for r in self.controller.store.tasks(job)}  # fmt: skip

    def messages(self) -> list[str]:
        return [e.message for e in self.seen]
