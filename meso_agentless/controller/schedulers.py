"""Frameworks that schedule their own tasks over the API: Mesos' two-level scheduling.

The allocation cycle decides how much each framework gets (weighted DRF); a subscribed
framework takes its part as offers of whole hosts' free resources (core.offers.OfferTaker),
sent on its own event stream, and decides what to run on them. `accept` launches its tasks
there as ordinary meso jobs of the framework's (taskspec), `decline` gives offers back and
refuses their hosts for a while (until they could offer more), `suppress`/`revive` stop and
restart offers. A held offer counts in its framework's share and on its host until it is
used, declined, rescinded or expires. A framework whose stream drops keeps its tasks for its
failover timeout; past it they are killed and the framework is forgotten.

Everything runs on the controller's thread, except attaching and detaching streams (API
threads), which take the lock.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meso_agentless.controller.events import Event, EventBus, Subscription
from meso_agentless.controller.planning import resources_json
from meso_agentless.core.model import Filter, Host
from meso_agentless.core.offers import QUANTUM, OfferTaker, choose_ports, over_offer
from meso_agentless.core.resources import PortRanges, format_resources, remove_ports
from meso_agentless.core.tasks import TRACKED
from meso_agentless.errors import UsageError
from meso_agentless.state.store import SchedulerRow, TaskRow
from meso_agentless.taskspec import MAX_NAME, FrameworkTask, job_name

if TYPE_CHECKING:
    import asyncio  # the API's streams; a CLI command does not import it

    from meso_agentless.controller.loop import Controller

OFFER_TIMEOUT = 30.0  # seconds an unanswered offer is held before it is rescinded
REFUSE_SECONDS = 5.0  # a decline's filter when it names none (Mesos' default)
MAX_REFUSE = 7 * 24 * 3600.0
FAILOVER = 60.0  # seconds a framework's tasks outlive its stream, unless it says otherwise
MAX_FAILOVER = 7 * 24 * 3600.0
HEARTBEAT = 5.0  # seconds between heartbeats on a framework's stream


class NotSubscribed(UsageError):
    """The framework is not registered (404)."""


class OfferConflict(UsageError):
    """An accept or decline that does not match the offers held (409)."""


@dataclass
class HeldOffer:
    id: str
    framework: str
    host: str
    resources: dict[str, int]
    ports: PortRanges
    attributes: dict[str, str]
    expires: float  # wall time

    def to_json(self) -> dict:
        return {"offer_id": self.id, "host": self.host,
                "resources": resources_json(self.resources),
                "ports": [list(r) for r in self.ports], "attributes": self.attributes,
                "expires": round(self.expires, 3)}  # fmt: skip


@dataclass
class Subscriber:
    row: SchedulerRow
    bus: EventBus
    stream: Subscription | None = None
    left: float | None = None  # monotonic time its stream ended (None: connected)
    suppressed: bool = False
    filters: list[Filter] = field(default_factory=list)
    offers: dict[str, HeldOffer] = field(default_factory=dict)
    quantum: dict[str, int] = field(default_factory=lambda: dict(QUANTUM))  # its tasks' size


class Schedulers:
    """The frameworks subscribed over the API, their offers, filters and streams."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.serving = False  # offers and failover only in `meso controller`, not embedded
        self.subscribers: dict[str, Subscriber] = {}
        self._lock = threading.Lock()
        self._gone: set[str] = set()  # offer ids rescinded, used or declined (for a clear 409)
        controller.events.subscribe(callback=self._forward)

    def start(self) -> None:
        """Serve: frameworks registered before this controller started have their failover
        time from now (their streams went with the last controller)."""
        self.serving = True
        now = self.c.clock.monotonic()
        for name, row in self.c.store.schedulers().items():
            self.subscribers[name] = Subscriber(row, self._bus(), left=now)

    def registered(self) -> set[str]:
        return set(self.subscribers) if self.serving else set(self.c.store.schedulers())

    # -- streams (API threads) -----------------------------------------------------------------

    def subscribe(
        self,
        name: str,
        failover: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
        callback: Callable[[Event], None] | None = None,
    ) -> Subscription:
        """Register (or fail over) `name` and attach a new stream (to an asyncio queue on
        `loop`, or to `callback`); an earlier stream ends with an `error` event. Offers held
        for the earlier stream are given back: the new stream gets fresh ones."""
        if len(name) > MAX_NAME - 2:
            raise UsageError(f"name: {name} is longer than {MAX_NAME - 2} characters: its "
                             "tasks' jobs, NAME-TASK, could not be named")  # fmt: skip
        sub = self.subscribers.get(name)
        if sub is None:
            active = [j.name for j in self.c.store.jobs()
                      if j.framework == name and j.state == "active"]  # fmt: skip
            if active:
                raise OfferConflict(f"framework {name!r} has jobs run from job files "
                                    f"({active[0]}): subscribe under another name")  # fmt: skip
            row = SchedulerRow(name, secrets.token_hex(8), FAILOVER if failover is None
                               else failover)  # fmt: skip
            sub = self.subscribers[name] = Subscriber(row, self._bus())
        elif failover is not None and failover != sub.row.failover:
            sub.row = SchedulerRow(name, sub.row.id, failover)
        self.c.store.put_scheduler(sub.row)
        sub.suppressed, sub.filters = False, []  # a new subscription wants offers (as Mesos')
        for offer in list(sub.offers.values()):
            self._drop(sub, offer)
        stream, _ = sub.bus.subscribe(loop=loop, callback=callback)
        with self._lock:
            old, sub.stream, sub.left = sub.stream, stream, None
        if old is not None:
            sub.bus.unsubscribe(old)
            old.deliver(self._error("another subscription of this framework took over"))
            old.close()
        sub.bus.publish("subscribed", f"framework {name} subscribed",
                        framework_id=sub.row.id, heartbeat_interval=HEARTBEAT,
                        failover_timeout=sub.row.failover)  # fmt: skip
        self.c.events.publish("framework", f"framework {name} subscribed", framework=name)
        self.c.mark_dirty()
        return stream

    def detach(self, name: str, stream: Subscription) -> None:
        """A stream ended (the framework went away, or another stream took over)."""
        sub = self.subscribers.get(name)
        if sub is None:
            return
        sub.bus.unsubscribe(stream)
        with self._lock:
            if sub.stream is stream:
                sub.stream, sub.left = None, self.c.clock.monotonic()
                self.c.events.publish("framework", f"framework {name} disconnected: its tasks "
                                      f"are killed in {sub.row.failover:g} s unless it "
                                      "subscribes again", framework=name)  # fmt: skip

    def close(self) -> None:
        """End every stream (the controller is stopping; failover counts from its return)."""
        with self._lock:
            streams = [s.stream for s in self.subscribers.values() if s.stream is not None]
        for stream in streams:
            stream.close()

    def _error(self, message: str) -> Event:
        """The last event of a stream that ends."""
        return Event(0, self.c.clock.time(), "error", message, None, {"message": message})

    def _bus(self) -> EventBus:
        return EventBus(self.c.clock.time)

    # -- the allocation cycle ------------------------------------------------------------------

    def takers(self) -> list[OfferTaker]:
        """One for every connected framework that wants offers."""
        if not self.serving:
            return []
        return [OfferTaker(name, {o.host for o in sub.offers.values()}, sub.quantum)
                for name, sub in sorted(self.subscribers.items())
                if sub.stream is not None and not sub.suppressed]  # fmt: skip

    def filters(self) -> list[Filter]:
        now = self.c.clock.time()
        for sub in self.subscribers.values():
            sub.filters = [f for f in sub.filters if f.until > now]
        return [f for sub in self.subscribers.values() for f in sub.filters]

    def held(self) -> list[HeldOffer]:
        return [o for sub in self.subscribers.values() for o in sub.offers.values()]

    def offered(self, takers: Iterable[OfferTaker], hosts: Iterable[Host]) -> None:
        """Send what the cycle gave each framework as offers on its stream."""
        by_name = {h.name: h for h in hosts}
        expires = self.c.clock.time() + OFFER_TIMEOUT
        for taker in takers:
            sub = self.subscribers[taker.framework]
            made = []
            for offer in taker.taken.values():
                host = by_name[offer.host]
                held = HeldOffer(secrets.token_hex(8), taker.framework, offer.host,
                                 dict(offer.resources), remove_ports(host.ports, host.used_ports),
                                 dict(host.attributes), expires)  # fmt: skip
                sub.offers[held.id] = held
                made.append(held.to_json())
            if made:
                sub.bus.publish("offers", f"{len(made)} offer(s)", offers=made)

    def tick(self, placeable: set[str]) -> None:
        """Rescind offers that expired or whose host can no longer be placed on; kill the
        tasks of frameworks whose failover timeout passed, and forget them."""
        if not self.serving:
            return
        now, wall = self.c.clock.monotonic(), self.c.clock.time()
        for name, sub in list(self.subscribers.items()):
            for offer in list(sub.offers.values()):
                if offer.expires <= wall or offer.host not in placeable or sub.stream is None:
                    self._drop(sub, offer, rescind=True)
            if sub.left is not None and now - sub.left >= sub.row.failover:
                self.c.events.publish("framework", f"framework {name}: failover timeout "
                                      f"({sub.row.failover:g} s) passed; its tasks are killed",
                                      framework=name)  # fmt: skip
                self.teardown(name)

    def _drop(self, sub: Subscriber, offer: HeldOffer, rescind: bool = False) -> None:
        sub.offers.pop(offer.id, None)
        self._gone.add(offer.id)
        if len(self._gone) > 100_000:
            self._gone.clear()
        self.c.mark_dirty()
        if rescind:
            sub.bus.publish("rescind", f"offer {offer.id} rescinded", offer_id=offer.id)

    # -- calls ---------------------------------------------------------------------------------

    def _sub(self, name: str) -> Subscriber:
        sub = self.subscribers.get(name)
        if sub is None:
            raise NotSubscribed(f"framework {name!r} is not subscribed")
        return sub

    def _offers(self, sub: Subscriber, ids: list[str]) -> list[HeldOffer]:
        """The held offers named, each once; OfferConflict naming the first that is not."""
        seen: set[str] = set()
        out = []
        for i, offer_id in enumerate(ids):
            if offer_id in seen:
                raise OfferConflict(f"offer_ids[{i}]: offer {offer_id} is named twice")
            seen.add(offer_id)
            offer = sub.offers.get(offer_id)
            if offer is None:
                why = "was already used, declined, rescinded or expired" if offer_id in \
                    self._gone else "is not an offer held by this framework"  # fmt: skip
                raise OfferConflict(f"offer_ids[{i}]: offer {offer_id} {why}")
            if offer.expires <= self.c.clock.time():
                raise OfferConflict(f"offer_ids[{i}]: offer {offer_id} expired")
            out.append(offer)
        return out

    def release(self, name: str, offer_ids: Iterable[object]) -> None:
        """Give back the named offers that are held (a bad accept launches nothing)."""
        sub = self.subscribers.get(name)
        if sub is None:
            return
        for offer_id in offer_ids:
            offer = sub.offers.get(offer_id) if isinstance(offer_id, str) else None
            if offer is not None:
                self._drop(sub, offer)

    def accept(self, name: str, offer_ids: list[str], tasks: list[FrameworkTask]) -> list[dict]:
        """Launch `tasks` on the offers' hosts: all, or (OfferConflict) none. The offers are
        used up either way; what the tasks do not take goes back to the pool."""
        sub = self._sub(name)
        try:
            offers = self._offers(sub, offer_ids)
            launches = self._fit(offers, tasks)
        except UsageError:
            self.release(name, offer_ids)
            raise
        for offer in offers:
            self._drop(sub, offer)
        sizes = [t.job.tasks[0].resources.amounts() for t in tasks]
        sub.quantum = {k: max(s.get(k, 0) for s in sizes) for k in {k for s in sizes for k in s}}
        return self.c.launch_offered(launches)

    def _fit(
        self, offers: list[HeldOffer], tasks: list[FrameworkTask]
    ) -> list[tuple[FrameworkTask, str, list[int]]]:
        """Each task's host and ports, checked against the offers; OfferConflict if not."""
        by_host: dict[str, list[HeldOffer]] = defaultdict(list)
        for offer in offers:
            by_host[offer.host].append(offer)
        placed: dict[str, list[FrameworkTask]] = defaultdict(list)
        tracked = self.c.store.tasks_in(TRACKED)
        active = {r.job for r in tracked}
        names = Counter(t.name for t in tasks)
        for i, task in enumerate(tasks):
            if names[task.name] > 1:
                raise OfferConflict(f"tasks[{i}].name: task {task.name!r} is given twice")
            host = task.host
            if host is None:
                if len(by_host) > 1:
                    raise OfferConflict(
                        f"tasks[{i}].host: required when the offers are on "
                        f"more than one host ({', '.join(sorted(by_host))})"
                    )
                host = next(iter(by_host))
            if host not in by_host:
                raise OfferConflict(f"tasks[{i}].host: {host} is not the host of the offers "
                                    f"({', '.join(sorted(by_host))})")  # fmt: skip
            existing = self.c.store.job(task.job.job)
            if existing is not None and existing.framework != task.job.framework:
                raise OfferConflict(f"tasks[{i}].name: job {task.job.job!r} belongs to "
                                    f"framework {existing.framework}")  # fmt: skip
            if task.job.job in active or (existing is not None and existing.state == "active"):
                raise OfferConflict(f"tasks[{i}].name: task {task.name!r} is still running")
            placed[host].append(task)
        out: list[tuple[FrameworkTask, str, list[int]]] = []
        for host, group in placed.items():
            held = by_host[host]
            offered: dict[str, int] = defaultdict(int)
            for offer in held:
                for key, amount in offer.resources.items():
                    offered[key] += amount
            asked = [t.job.tasks[0].resources.amounts() for t in group]
            over = over_offer(offered, asked)
            if over:
                raise OfferConflict(f"tasks on {host}: more than the offers hold: {over} "
                                    f"(offered: {format_resources(offered)})")  # fmt: skip
            in_use = {p for r in tracked if r.host == host for p in r.ports}
            free = remove_ports(held[0].ports, in_use)
            ports = choose_ports(free, [(t.ports, a.get("ports", 0))
                                        for t, a in zip(group, asked, strict=True)])  # fmt: skip
            if isinstance(ports, str):
                raise OfferConflict(f"tasks on {host}: {ports}")
            out += [(t, host, p) for t, p in zip(group, ports, strict=True)]
        return out

    def decline(self, name: str, offer_ids: list[str], refuse_seconds: float | None) -> None:
        """Give the offers back; their hosts are not offered to this framework again for
        `refuse_seconds`, unless they could offer more than was declined."""
        sub = self._sub(name)
        offers = self._offers(sub, offer_ids)
        seconds = REFUSE_SECONDS if refuse_seconds is None else refuse_seconds
        until = self.c.clock.time() + seconds
        for offer in offers:
            self._drop(sub, offer)
            if seconds > 0:
                sub.filters.append(Filter(name, offer.host, until, dict(offer.resources)))

    def suppress(self, name: str) -> None:
        self._sub(name).suppressed = True

    def revive(self, name: str) -> None:
        sub = self._sub(name)
        sub.suppressed, sub.filters = False, []
        self.c.mark_dirty()

    def kill(self, name: str, task_id: str) -> list[dict]:
        self._sub(name)
        job = self.c.store.job(job_name(name, task_id))
        if job is None or job.framework != name:
            raise NotSubscribed(f"framework {name!r} has no task {task_id!r}")
        if job.state != "active":
            return []  # it has ended: nothing to stop, and its outcome stands
        return self.c.kill(job.name)

    def reconcile(self, name: str, task_ids: list[str]) -> int:
        """Send an `update` with the latest state of each task named (none: of every task
        still running). A task never launched is `unknown`."""
        sub = self._sub(name)
        jobs = {j.name: j for j in self.c.store.jobs() if j.framework == name}
        if not task_ids:
            task_ids = [n.removeprefix(f"{name}-") for n, j in jobs.items() if j.state == "active"]
        for task_id in task_ids:
            job = jobs.get(job_name(name, task_id))
            rows = self.c.store.tasks(job.name) if job is not None else []
            row = max(rows, key=lambda r: (r.run, r.attempt), default=None)
            if job is None or row is None:
                sub.bus.publish("update", f"{task_id}: unknown", task_id=task_id,
                                state="unknown", reason="no such task")  # fmt: skip
            else:
                sub.bus.publish("update", f"{task_id}: {row.state}", job.name,
                                **_update(task_id, row))  # fmt: skip
        return len(task_ids)

    def teardown(self, name: str) -> list[dict]:
        """Kill every task of the framework and forget it."""
        sub = self._sub(name)
        stopped = []
        for job in self.c.store.jobs():
            if job.framework == name and job.state == "active":
                stopped += self.c.kill(job.name)
        for offer in list(sub.offers.values()):
            self._drop(sub, offer)
        del self.subscribers[name]
        self.c.store.drop_scheduler(name)
        with self._lock:
            stream, sub.stream = sub.stream, None
        if stream is not None:
            stream.deliver(self._error("torn down: its tasks were killed"))
            stream.close()
        self.c.events.publish("framework", f"framework {name} torn down", framework=name)
        return stopped

    # -- updates -------------------------------------------------------------------------------

    def _forward(self, event: Event) -> None:
        """A task's new state, from the controller's events, to its framework's stream."""
        if event.kind != "task" or event.job is None or "state" not in event.data:
            return
        job = self.c.store.job(event.job) if self.subscribers else None
        sub = self.subscribers.get(job.framework) if job is not None else None
        if sub is None or not event.job.startswith(f"{sub.row.name}-"):
            return
        task_id = event.job.removeprefix(f"{sub.row.name}-")
        sub.bus.publish(
            "update",
            f"{task_id}: {event.data['state']}",
            event.job,
            task_id=task_id,
            **{k: event.data.get(k) for k in UPDATE_FIELDS},
        )


UPDATE_FIELDS = ("state", "exit_code", "signal", "reason", "host", "unit", "attempt")


def _update(task_id: str, row: TaskRow) -> dict:
    return {"task_id": task_id, "state": row.state.value, "exit_code": row.exit_code,
            "signal": row.signal, "reason": row.reason, "host": row.host, "unit": row.unit,
            "attempt": row.attempt}  # fmt: skip


def holding(offers: Iterable[HeldOffer]) -> Mapping[str, dict[str, dict[str, int]]]:
    """framework -> host -> what its held offers take there."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for offer in offers:
        held = out[offer.framework][offer.host]
        for key, amount in offer.resources.items():
            held[key] = held.get(key, 0) + amount
    return out
