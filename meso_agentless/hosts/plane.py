"""The execution plane: launch, watch, stop and reconcile tasks on hosts over SSH (the shell
around `core.tasks`). One NodeConnection per host, shared by every call."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from meso_agentless.core.tasks import HostReport, Reconciliation, reconcile
from meso_agentless.errors import UsageError
from meso_agentless.hosts.ssh import HostKeyError
from meso_agentless.hosts.transport import DEFAULT_TIMEOUT, NodeConnection, Unreachable
from meso_agentless.inventory import Node

MAX_PARALLEL = 32


class ExecutionPlane:
    """Every host of a cluster, each behind its warm connection."""

    def __init__(self, nodes: Sequence[Node], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.connections = {n.name: NodeConnection(n, timeout=timeout) for n in nodes}

    def host(self, name: str) -> NodeConnection:
        try:
            return self.connections[name]
        except KeyError:
            raise UsageError(f"host {name!r} is not in the inventory") from None

    def launch(self, host: str, request: dict, timeout: float | None = None) -> dict:
        """Launch on `host`; state "unreachable" if it could not be asked (the launch may or may
        not have happened: reconcile, then launching the same unit again is safe)."""
        try:
            return self.host(host).request("launch", timeout=timeout, **request)
        except Unreachable as exc:
            return {"unit": f"{request['unit']}.service", "state": "unreachable",
                    "error": str(exc)}  # fmt: skip

    def status(self, host: str, unit: str) -> dict:
        try:
            return self.host(host).request("status", unit=unit)
        except Unreachable as exc:
            return {"unit": f"{unit}.service", "state": "unreachable", "error": str(exc)}

    def stop(self, host: str, unit: str, timeout: float = 60.0) -> dict:
        return self.host(host).request("stop", timeout=timeout, unit=unit)

    def forget(self, host: str, unit: str) -> dict:
        return self.host(host).request("forget", unit=unit)

    def logs(
        self, host: str, unit: str, follow: bool = False, lines: int = 1000
    ) -> Iterator[bytes]:
        request = {"unit": unit, "follow": follow, "lines": lines}
        timeout = 365 * 86400.0 if follow else None
        return self.host(host).stream("logs", request, timeout=timeout)

    def reports(self) -> dict[str, HostReport | None]:
        """Every host's meso units, asked in parallel; None for a host that could not be asked."""

        def one(connection: NodeConnection) -> HostReport | None:
            try:
                listed = connection.request("list")
            except (Unreachable, HostKeyError):
                return None
            units = {u["unit"].removesuffix(".service"): u for u in listed["units"]}
            return HostReport(listed["boot"], units)

        conns = list(self.connections.values())
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(conns)))) as pool:
            return dict(zip(self.connections, pool.map(one, conns), strict=True))

    def reconcile(
        self, expected: Mapping[str, str], known_boots: Mapping[str, str]
    ) -> Reconciliation:
        """What runs where, from the hosts' own units (see core.tasks.reconcile)."""
        return reconcile(expected, self.reports(), known_boots)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
