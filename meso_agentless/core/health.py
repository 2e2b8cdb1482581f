"""Whether a host is up, from when it last answered (pure).

A host that answered within `suspect_after` seconds is up. One that has been silent longer, or
whose last request failed, is suspect: nothing new is placed there, nothing is replaced yet.
Silent for `unreachable_after` seconds, it is unreachable: its tasks are unreachable, not lost.
"""

from __future__ import annotations

from enum import StrEnum


class HostState(StrEnum):
    UNKNOWN = "unknown"  # never asked yet
    UP = "up"
    SUSPECT = "suspect"
    UNREACHABLE = "unreachable"
    GONE = "gone"  # it answered with a new boot identity: its units are gone
    STOPPING = "stopping"  # it answers, shutting down: its units go with it
    DRAINING = "draining"  # an operator is moving everything off it
    DRAINED = "drained"  # nothing of meso's runs there any more


# what it says of its units can be believed
ANSWERING = frozenset({HostState.UP, HostState.SUSPECT, HostState.STOPPING})


def host_state(
    last_ok: float | None,
    last_failure: float | None,
    now: float,
    suspect_after: float,
    unreachable_after: float,
) -> HostState:
    """The state of a host at `now`, from the times (one clock) of its last answer and failure."""
    if last_ok is None:
        return HostState.UNKNOWN if last_failure is None else HostState.UNREACHABLE
    silent = now - last_ok
    if silent >= unreachable_after:
        return HostState.UNREACHABLE
    if silent >= suspect_after or (last_failure is not None and last_failure > last_ok):
        return HostState.SUSPECT
    return HostState.UP


def partitioned(
    unreachable_since: dict[str, float], total: int, now: float, window: float = 10.0
) -> bool:
    """Whether the controller itself looks cut off: more than a third of the hosts unreachable,
    and that many of them went unreachable within `window` seconds of each other. A network
    failure at the controller must not look like a cluster failure (Mesos' agent removal rate
    limit): then nothing is replaced until the hosts return or an operator says so (pure)."""
    if total <= 0 or 3 * len(unreachable_since) <= total:
        return False
    times = sorted(unreachable_since.values())
    need = total // 3 + 1  # more than a third
    return any(times[i + need - 1] - times[i] <= window for i in range(len(times) - need + 1))


def task_health(healthy: bool | None, failures: int) -> str:
    """What a task's health checks say, from the last result and the failures in a row that
    count: starting (not checked yet, or failing within its grace period), healthy, unhealthy."""
    if healthy:
        return "healthy"
    if healthy is None or failures == 0:
        return "starting"
    return "unhealthy"
