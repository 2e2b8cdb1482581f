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
