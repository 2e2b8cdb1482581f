"""What happens in the cluster, as a stream: task states, placements, unplaced tasks with their
reasons, hosts going up or unreachable, jobs' outcomes.

The controller publishes; the API's `/v1/events` (Server-Sent Events) and the CLI's progress
lines subscribe. The last events are kept so that a subscriber that reconnects with the id of
the last one it saw misses nothing still held.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only subscribers on an event loop (the API's) need asyncio: not a CLI
    import asyncio

KEEP = 2000


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    kind: str  # task, placed, unplaced, host, job, run (a cron run started, ended or skipped)
    message: str  # one line for people: what `meso run` prints
    job: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Subscription:
    """Events for one subscriber (all, or one job's), to an asyncio queue or a callback."""

    def __init__(
        self,
        job: str | None,
        callback: Callable[[Event], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        maxsize: int = 10_000,
    ) -> None:
        self.job = job
        self.callback = callback
        self.loop = loop
        self.maxsize = maxsize
        self._queue: asyncio.Queue[Event | None] | None = None
        self.overflowed = False

    @property
    def queue(self) -> asyncio.Queue[Event | None]:
        """Where the events go for a subscriber on an event loop."""
        if self._queue is None:
            import asyncio

            self._queue = asyncio.Queue(self.maxsize)
        return self._queue

    def wants(self, event: Event) -> bool:
        return self.job is None or event.job == self.job

    def deliver(self, event: Event) -> None:
        if self.callback is not None:
            self.callback(event)
        elif self.loop is not None:
            self.loop.call_soon_threadsafe(self._put, event)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._put, None)

    def _put(self, event: Event | None) -> None:
        import asyncio

        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # a subscriber that does not read is cut off, not waited for
            self.overflowed = True


class EventBus:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # ids go on rising across restarts (a thousand a millisecond), so a subscriber that
        # comes back with the last id it saw is given every event this controller still holds
        self._ids = itertools.count(int(clock() * 1000) * 1000 + 1)
        self._recent: deque[Event] = deque(maxlen=KEEP)
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self.counted: Callable[[Event], None] = lambda _e: None  # a metric's observer

    def publish(self, kind: str, message: str, job: str | None = None, **data: Any) -> Event:
        with self._lock:
            event = Event(next(self._ids), self._clock(), kind, message, job, data)
            self._recent.append(event)
            subscribers = [s for s in self._subscribers if s.wants(event)]
        for subscriber in subscribers:
            subscriber.deliver(event)
        self.counted(event)
        return event

    def subscribe(
        self,
        job: str | None = None,
        callback: Callable[[Event], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        after: int | None = None,
    ) -> tuple[Subscription, list[Event]]:
        """A new subscription, and the kept events after id `after` (None: none of them)."""
        subscription = Subscription(job, callback, loop)
        with self._lock:
            self._subscribers.append(subscription)
            missed = [] if after is None else [
                e for e in self._recent if e.id > after and subscription.wants(e)
            ]  # fmt: skip
        return subscription, missed

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def close(self) -> None:
        """Ends every subscription (shutting down)."""
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber.close()

    def recent(self, job: str | None = None) -> list[Event]:
        """The events still held (of one job, or all), oldest first."""
        with self._lock:
            return [e for e in self._recent if job is None or e.job == job]

    def last_id(self) -> int:
        with self._lock:
            return self._recent[-1].id if self._recent else 0
