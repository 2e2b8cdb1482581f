"""Each host's watch: the node command's `watch` on a channel of its own writes a line when a
task's unit ends there, and the fleet samples that host at once instead of at its next round.

One thread reads every host's watch (a selector over the channels); opening one (a new channel on
the host's warm connection) happens on a small pool, so a slow host holds up no other. A watch
that fails or ends is opened again after a backoff, and a host whose node command cannot watch
(not root, no systemd socket) is asked again only after a long pause. Nothing depends on a
watch: what the fleet knows still comes from samples, and rounds go on every interval either
way; a watch only makes a task's end seen sooner.
"""

from __future__ import annotations

import json
import logging
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from meso_agentless.errors import MesoError

log = logging.getLogger("meso.controller")

TICK = 0.25  # seconds between looks at which watches to open
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # after a watch that failed or ended, in turn
REFUSED_PAUSE = 600.0  # a node command that said it cannot watch is asked again after this
MAX_WATCHES = 2000  # hosts watched at once (two descriptors each); beyond, rounds only


class Channel(Protocol):
    def fileno(self) -> int: ...
    def recv(self, size: int) -> bytes: ...
    def recv_stderr_ready(self) -> bool: ...
    def recv_stderr(self, size: int) -> bytes: ...
    def setblocking(self, blocking: bool) -> None: ...
    def close(self) -> None: ...


class Watches:
    """Watches on the hosts `add` names; `ended(host)` is called for each line saying a unit
    ended there (from the reading thread: it must only note it)."""

    def __init__(
        self,
        open_channel: Callable[[str], Channel],
        ended: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_channel, self._ended, self._clock = open_channel, ended, clock
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._channels: dict[str, Channel] = {}  # host -> its open watch
        self._buffers: dict[str, bytes] = {}
        self._watching: set[str] = set()  # whose watch has said it watches
        self._refused: set[str] = set()  # whose node command said it cannot watch
        self._opening: set[str] = set()
        self._opened: list[tuple[str, Channel]] = []  # opened by the pool, not yet registered
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="watch-open")
        self._thread = threading.Thread(target=self._loop, name="watches", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, hosts: Iterable[str]) -> None:
        """Watch these hosts too (those answering; a new one is tried at once). A watch is
        never closed for a host that stops answering: it ends by itself when the connection
        drops, and a host merely late keeps its watch (opening one again costs the host a
        process's start)."""
        with self._lock:
            for host in hosts:
                if host not in self._wanted and len(self._wanted) < MAX_WATCHES:
                    self._wanted.add(host)

    def back(self, host: str) -> None:
        """`host` answers again after failing (a reboot, a cut): its watch, if it has none,
        is tried at once, its backoff over (not one whose node command cannot watch)."""
        with self._lock:
            if host in self._wanted and host not in self._refused:
                self._retry_at.pop(host, None)
                self._failures.pop(host, None)

    @property
    def watched(self) -> set[str]:
        """The hosts whose watch is open and has said it is watching."""
        with self._lock:
            return set(self._watching)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * TICK + 1)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for channel in [*self._channels.values(), *(c for _, c in opened)]:
            channel.close()
        self._channels.clear()
        self._selector.close()

    # -- the reading thread --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._register_opened()
            self._open_due()
            if not self._channels:
                self._stopping.wait(TICK)
                continue
            for key, _ in self._selector.select(TICK):
                self._read(key.data)

    def _read(self, host: str) -> None:
        channel = self._channels[host]
        try:
            data = channel.recv(65536)
        except TimeoutError:  # the descriptor also says ready for what came on stderr
            while channel.recv_stderr_ready():  # read away: else it says ready for good
                log.debug("%s: watch: %r", host, channel.recv_stderr(4096)[:200])
            return
        except OSError as exc:
            self._closed(host, f"read failed: {exc}")
            return
        if not data:
            self._closed(host, "ended")
            return
        lines = (self._buffers[host] + data).split(b"\n")
        self._buffers[host] = lines.pop()
        for line in lines:
            if host not in self._channels:  # a line before closed it: the rest is not read
                return
            self._line(host, line)

    def _line(self, host: str, line: bytes) -> None:
        try:
            said = json.loads(line)
        except ValueError:
            said = None
        if not isinstance(said, dict):
            self._closed(host, f"said {line[:100]!r}")
        elif "ended" in said:
            self._ended(host)
        elif said.get("ok") is True:
            with self._lock:
                self._failures[host] = 0
                self._watching.add(host)
                self._refused.discard(host)
        else:
            with self._lock:
                watching = host in self._watching
            if watching:  # it watched until now (systemd's connection ended): soon again
                self._closed(host, f"ended: {said.get('error')}")
                return
            log.info("%s cannot watch its units (%s): its tasks' ends are seen by its samples",
                     host, said.get("error"))  # fmt: skip
            with self._lock:
                self._refused.add(host)
            self._closed(host, "refused", pause=REFUSED_PAUSE)  # rounds only for a long while

    def _closed(self, host: str, why: str, pause: float | None = None) -> None:
        self._drop(host)
        wait = self._failed(host, pause)
        log.debug("%s: watch %s; again in %.0f s", host, why, wait)

    def _failed(self, host: str, pause: float | None = None) -> float:
        """One more failure of `host`'s watch: when it is tried again (`pause`, else its next
        backoff), and how long that is from now."""
        with self._lock:
            failures = self._failures[host] = self._failures.get(host, 0) + 1
            wait = pause or BACKOFF[min(failures, len(BACKOFF)) - 1]
            self._retry_at[host] = self._clock() + wait
        return wait

    def _register_opened(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for host, channel in opened:
            channel.setblocking(False)
            self._channels[host], self._buffers[host] = channel, b""
            self._selector.register(channel, selectors.EVENT_READ, host)

    def _drop(self, host: str) -> None:
        channel = self._channels.pop(host)
        self._buffers.pop(host, None)
        self._selector.unregister(channel)
        channel.close()
        with self._lock:
            self._watching.discard(host)

    def _open_due(self) -> None:
        now = self._clock()
        with self._lock:
            due = [h for h in sorted(self._wanted) if h not in self._channels
                   and h not in self._opening and self._retry_at.get(h, 0.0) <= now]  # fmt: skip
            self._opening.update(due)
        for host in due:
            self._pool.submit(self._open, host)

    def _open(self, host: str) -> None:
        """On the pool: open the host's watch, handed to the reading thread."""
        try:
            channel = self._open_channel(host)
        except (MesoError, OSError) as exc:
            with self._lock:
                self._opening.discard(host)
            self._failed(host)
            log.debug("%s: opening its watch failed: %s", host, exc)
            return
        with self._lock:
            self._opening.discard(host)
            if self._stopping.is_set():
                channel.close()
                return
            self._opened.append((host, channel))
