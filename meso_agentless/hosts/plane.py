"""The execution plane: sample hosts, launch, watch, stop and reconcile tasks on them.

`Plane` is what the controller needs from its hands; `ExecutionPlane` does it over SSH (one warm
NodeConnection per host), and `meso_agentless.testing.fakes.FakePlane` in memory.

Every verb treats a host failure the same way: `Unreachable` (network, sshd, deadline, or a
host key that is unknown or changed) when the host could not be asked, `NodeRefused` when the
node command said no. Each call has its own deadline, and concerns one host only.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

import paramiko

from meso_agentless.core.tasks import HostReport, Reconciliation, reconcile
from meso_agentless.errors import MesoError, UsageError
from meso_agentless.hosts import ssh
from meso_agentless.hosts.transport import (
    DEFAULT_TIMEOUT,
    TRANSPORT_ERRORS,
    NodeConnection,
    NodeRefused,
    Unreachable,
    ask_each,
)
from meso_agentless.inventory import Node
from meso_agentless.node.nodecmd import MAX_FORGET

MAX_PARALLEL = 32
FENCED = frozenset({"launch", "stop", "forget", "trigger"})  # verbs that carry the epoch
# requests that change a host expire on it this long after their deadline (clocks compared by
# each sample): one held in a cut connection and delivered after the controller gave up on it
# does nothing (Controller waits as long before it launches a unit again: EXPIRY_MARGIN)
EXPIRY_MARGIN = 1.0
WATCH_TIMEOUT = 3.0  # opening a host's watch channel, connecting first if need be
T = TypeVar("T")

__all__ = ["ExecutionPlane", "NodeRefused", "Plane", "Unreachable"]


class Plane(Protocol):
    """The controller's hands on its hosts. Each verb asks one host and may raise Unreachable or
    NodeRefused; answers are the node command's (see node/nodecmd.py)."""

    @property
    def hosts(self) -> tuple[str, ...]: ...
    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict: ...
    def launch(self, host: str, request: dict, timeout: float | None = None) -> dict: ...
    def status(self, host: str, unit: str, timeout: float | None = None) -> dict: ...
    def stop(
        self, host: str, unit: str, timeout: float | None = None, wait: bool = True
    ) -> dict: ...
    def trigger(
        self, host: str, unit: str, timeout: float | None = None, scheduled: int | None = None
    ) -> dict: ...
    def forget(self, host: str, unit: str, timeout: float | None = None) -> dict: ...
    def forget_many(
        self, host: str, units: Sequence[str], timeout: float | None = None
    ) -> dict: ...
    def health(self, host: str, request: dict, timeout: float | None = None) -> dict: ...
    def logs(
        self,
        host: str,
        unit: str,
        follow: bool = False,
        lines: int = 1000,
        since: int | None = None,
    ) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class ExecutionPlane:
    """Every host of a cluster, each behind its warm SSH connection."""

    def __init__(self, nodes: Sequence[Node], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.connections = {n.name: NodeConnection(n, timeout=timeout) for n in nodes}
        # health checks wait on tasks, up to their timeouts: on connections of their own, so a
        # slow check never delays a host's sample or a launch
        self.checkers = {n.name: NodeConnection(n, timeout=timeout) for n in nodes}
        # the leader's (state identity, epoch) when several controllers share the state: sent
        # with every request that changes a host, which refuses a lower epoch than it has seen
        self.fence: tuple[str, int] | None = None
        # each host's clock less ours, from its recent samples (a host not yet sampled, or
        # whose node command is older than `expires`, gets requests without it)
        self.clock_offsets: dict[str, float] = {}
        self._clock_readings: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=10))
        self._starting: list[threading.Thread] = []  # start()'s thread
        self._prefetched: Future | None = None  # start()'s round, until a round takes it

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.connections)

    def start(self, timeout: float | None = None) -> None:
        """Sample every host now, in the background, connecting as need be: the next round
        asked with no fields takes these answers (a command that is about to sample imports
        the rest of itself meanwhile, and waits for the slower of the two, not for both)."""
        hosts = {h: {} for h in self.hosts}
        self._prefetched = Future()
        prefetched = self._prefetched

        def round_() -> None:
            try:
                prefetched.set_result(self._sample_round(hosts, timeout))
            except BaseException as exc:  # handed to whoever takes the round
                prefetched.set_exception(exc)

        thread = threading.Thread(target=round_, name="first-samples", daemon=True)
        thread.start()
        self._starting.append(thread)

    def host(self, name: str) -> NodeConnection:
        try:
            return self.connections[name]
        except KeyError:
            raise UsageError(f"host {name!r} is not in the inventory") from None

    def _ask(self, host: str, verb: str, timeout: float | None, **fields: object) -> dict:
        connection = self.host(host)
        if verb in FENCED:
            if self.fence is not None:
                fields["epoch_state"], fields["epoch"] = self.fence
            offset = self.clock_offsets.get(host)
            if offset is not None:  # on the host's clock: past it, the host does nothing
                wait = timeout or connection.timeout
                fields["expires"] = round(time.time() + offset + wait + EXPIRY_MARGIN, 3)
        try:
            answer = connection.request(verb, timeout=timeout, **fields)
        except ssh.SSHError as exc:  # a host key refused: no more reachable than a cut host
            raise Unreachable(str(exc)) from exc
        if verb in ("sample", "list"):  # both say the host's time
            self._note_clock(host, answer)
        return answer

    def _note_clock(self, host: str, answer: object) -> None:
        """The host's clock offset from a sample's (or list's) `time`. Each reading is low by
        however long the answer took to be read (a round reads them all before it returns), so
        the offset is the highest of the last few: the host's deadlines are never later than
        meant."""
        said = answer.get("time") if isinstance(answer, dict) else None
        if isinstance(said, (int, float)) and not isinstance(said, bool):
            readings = self._clock_readings[host]
            readings.append(said - time.time())
            self.clock_offsets[host] = max(readings)

    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict:
        """What the host says of itself: capacity, load, boot identity, its meso units and
        cron runs; `fields` are the sample's own (leases of cron timers, runs already had)."""
        return self._ask(host, "sample", timeout, **fields)

    def sample_round(
        self, fields: Mapping[str, Mapping], timeout: float | None = None
    ) -> dict[str, dict | MesoError]:
        """Every host of `fields` sampled (with its fields), each answer or why not
        (Unreachable, NodeRefused): sent to all before any answer is read, so a round of
        warm hosts costs one round trip, not one per host."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and list(fields) == list(self.hosts) and not any(fields.values()):
            return prefetched.result()
        return self._sample_round(fields, timeout)

    def _sample_round(
        self, fields: Mapping[str, Mapping], timeout: float | None
    ) -> dict[str, dict | MesoError]:
        hosts = list(fields)
        calls = [(self.host(h), "sample", dict(fields[h])) for h in hosts]
        answers = ask_each(calls, timeout)
        for host, answer in zip(hosts, answers, strict=True):
            self._note_clock(host, answer)
        return {h: Unreachable(str(a)) if isinstance(a, ssh.SSHError) else a
                for h, a in zip(hosts, answers, strict=True)}  # fmt: skip

    def launch(self, host: str, request: dict, timeout: float | None = None) -> dict:
        """Launch on `host`. Unreachable: it may or may not have happened; reconcile, then
        launching the same unit again is safe (the unit name is the idempotency key)."""
        return self._ask(host, "launch", timeout, **request)

    def status(self, host: str, unit: str, timeout: float | None = None) -> dict:
        return self._ask(host, "status", timeout, unit=unit)

    def stop(self, host: str, unit: str, timeout: float | None = 60.0, wait: bool = True) -> dict:
        """Stop the unit (its grace period, then SIGKILL); wait=False only starts the stop."""
        return self._ask(host, "stop", timeout, unit=unit, wait=wait)

    def forget(self, host: str, unit: str, timeout: float | None = None) -> dict:
        return self._ask(host, "forget", timeout, unit=unit)

    def forget_many(self, host: str, units: Sequence[str], timeout: float | None = None) -> dict:
        """forget of several ended units of one host, one request per MAX_FORGET of them: each
        unit's status (with an `error` if it still holds resources and was left)."""
        out: dict = {}
        for start in range(0, len(units), MAX_FORGET):
            chunk = list(units[start : start + MAX_FORGET])
            out.update(self._ask(host, "forget", timeout, units=chunk)["units"])
        return out

    def trigger(
        self, host: str, unit: str, timeout: float | None = None, scheduled: int | None = None
    ) -> dict:
        """Fire a cron job's timer now (as the run of `scheduled`, a missed time, if given):
        its run's record (started, or skipped and why)."""
        if scheduled is None:
            return self._ask(host, "trigger", timeout, unit=unit)
        return self._ask(host, "trigger", timeout, unit=unit, scheduled=scheduled)

    def health(self, host: str, request: dict, timeout: float | None = None) -> dict:
        """Run a task's health check on its host: {"healthy": bool, "detail": str}."""
        self.host(host)
        try:
            return self.checkers[host].ask("health", request, timeout)
        except ssh.SSHError as exc:
            raise Unreachable(str(exc)) from exc

    def logs(
        self,
        host: str,
        unit: str,
        follow: bool = False,
        lines: int = 1000,
        since: int | None = None,
    ) -> Iterator[bytes]:
        """The unit's journal, as it comes (follow: until the caller stops reading); `since`
        (Unix seconds) leaves out what an earlier unit of the same name wrote."""
        request: dict = {"unit": unit, "follow": follow, "lines": lines}
        if since is not None:
            request["since"] = since
        timeout = 365 * 86400.0 if follow else None
        stream = self.host(host).stream("logs", request, timeout=timeout)
        try:
            yield from stream
        except TRANSPORT_ERRORS as exc:
            raise Unreachable(f"{host}: {exc}") from exc

    def watch_channel(self, host: str) -> paramiko.Channel:
        """The host's node command `watch` on a channel of its own (its lines: units that ended),
        on the connection its samples take (hosts.watching reads it)."""
        try:
            return self.host(host).open_channel("watch", {}, WATCH_TIMEOUT)
        except TRANSPORT_ERRORS as exc:
            raise Unreachable(f"{host}: {exc}") from exc

    def reports(self) -> dict[str, HostReport | None]:
        """Every host's meso units, asked in parallel; None for a host that could not be asked."""

        def one(host: str) -> HostReport | None:
            try:
                listed = self._ask(host, "list", None)
            except (Unreachable, NodeRefused):
                return None
            units = {u["unit"].removesuffix(".service").removesuffix(".timer"): u
                     for u in listed["units"]}  # fmt: skip
            return HostReport(listed["boot"], units)

        return dict(zip(self.hosts, each_host(self.hosts, one), strict=True))

    def reconcile(
        self, expected: Mapping[str, str], known_boots: Mapping[str, str]
    ) -> Reconciliation:
        """What runs where, from the hosts' own units (see core.tasks.reconcile)."""
        return reconcile(expected, self.reports(), known_boots)

    def close(self) -> None:
        for thread in self._starting:  # within its deadline; then nothing connects late
            thread.join()
        self._starting.clear()
        for connection in (*self.connections.values(), *self.checkers.values()):
            connection.close()


def each_host(items: Sequence[str], call: Callable[[str], T]) -> list[T]:
    """`call` for every item at once (threads: each waits on its own host)."""
    if len(items) <= 1:
        return [call(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(items))) as pool:
        return list(pool.map(call, items))
