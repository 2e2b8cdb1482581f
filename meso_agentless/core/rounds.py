"""Which hosts a sample round asks, how long it waits for them, and when a host that failed is
asked again (pure).

The controller samples every answering host in one pipelined round every interval. A host that
does not answer the round (unreachable, cut, late, refused) leaves it, so it costs the round its
deadline once, and is asked again at once on its own, with its whole deadline: a failure counts
only then. One that fails on its own is asked again `backoff` after its last try began, longer
with every failure in a row, until it answers; then it rejoins the round.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_BACKOFF = 2.0  # a failing host is asked again within this: back up within ~2 s of a heal
MIN_ROUND_DEADLINE = 0.1


def round_deadline(
    timeout: float, interval: float, suspect_after: float, connecting: bool = False
) -> float:
    """How long a round waits for its hosts' answers: the whole `timeout` while some have never
    answered (connecting: nobody looks silent yet), else short enough that a host that does not
    answer never makes the others look silent (they are asked again `interval` after the round
    before, and recorded before `suspect_after` has passed)."""
    if connecting:
        return timeout
    return min(timeout, max(MIN_ROUND_DEADLINE, (suspect_after - interval) / 2))


def backoff(interval: float, failures: int, most: float = MAX_BACKOFF) -> float:
    """How long after its last try began a host is asked again: `interval` while it answers,
    `interval` more for every failure in a row, and never more than `most`."""
    return interval if not failures else min(most, interval * failures)


class Retries:
    """The hosts out of the round: failures in a row of each, when it is due again, and
    whether a try of it is under way (given out by `take_due`, until it is told the result)."""

    def __init__(self, interval: float, most: float = MAX_BACKOFF) -> None:
        self.interval = interval
        self.most = most
        self._failures: dict[str, int] = {}
        self._due: dict[str, float] = {}  # host -> when it is tried again; absent while tried

    def __contains__(self, host: object) -> bool:
        return host in self._failures

    def __len__(self) -> int:
        return len(self._failures)

    def in_round(self, hosts: Iterable[str]) -> list[str]:
        """The `hosts` a round asks: those that answered their last request."""
        return [h for h in hosts if h not in self._failures]

    def late(self, host: str, now: float) -> None:
        """`host` did not answer its round: out of it, and due on its own at once (no failure
        counted yet: that try has its whole deadline)."""
        self._failures.setdefault(host, 0)
        self._due[host] = now

    def failed(self, host: str, began: float) -> bool:
        """A request to `host` begun at `began` failed; whether it just left the round."""
        left = host not in self._failures
        failures = self._failures[host] = self._failures.get(host, 0) + 1
        self._due[host] = began + backoff(self.interval, failures, self.most)
        return left

    def answered(self, host: str) -> bool:
        """`host` answered; whether it rejoins the round (it was out)."""
        self._due.pop(host, None)
        return self._failures.pop(host, None) is not None

    def failures(self, host: str) -> int:
        return self._failures.get(host, 0)

    def take_due(self, now: float) -> list[str]:
        """The hosts due for a try at `now`, earliest first: each is then being tried (not due
        again) until `failed` or `answered` is called for it."""
        due = sorted((at, h) for h, at in self._due.items() if at <= now)
        for _, host in due:
            del self._due[host]
        return [h for _, h in due]

    def next_due(self) -> float | None:
        """When the next host not being tried falls due (None: none waits)."""
        return min(self._due.values(), default=None)
