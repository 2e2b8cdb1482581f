"""The controller's own thread in `meso controller`: cycles, and the API's changes, one at a time.

Only this thread changes the state. It runs a cycle every `interval`, and at once when woken
(the fleet saw a change) or after a command (submit, scale, kill, a framework's settings). API
threads hand it their command and wait for the answer; reads never come here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from meso_agentless.controller.leadership import NotLeader
from meso_agentless.controller.loop import Controller

T = TypeVar("T")
log = logging.getLogger("meso.controller")


class Stopped(Exception):
    """The controller is shutting down: the command was not run."""


class Runner:
    def __init__(
        self,
        controller: Controller,
        interval: float = 1.0,
        on_cycle: Callable[[float, Any], None] | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        """`gate`: asked on this thread before each command and cycle; False (a standby, or a
        leader whose lease runs out) runs neither: commands fail with NotLeader."""
        self.controller = controller
        self.gate = gate or (lambda: True)
        self.interval = interval
        self.on_cycle = on_cycle or (lambda _seconds, _report: None)
        self._commands: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run a cycle soon (something changed on a host)."""
        self._woken.set()
        self._commands.put(None)

    def call(self, command: Callable[[], T], timeout: float = 120.0) -> T:
        """Run `command` on the controller's thread; its result, or its error."""
        return self.submit(command).result(timeout)

    def submit(self, command: Callable[[], T]) -> Future[T]:
        """Queue `command` for the controller's thread: its result or error, to come."""
        if self._stopping.is_set():
            raise Stopped("the controller is shutting down")
        future: Future[T] = Future()
        self._commands.put((command, future))
        return future

    def stop(self, timeout: float = 8.0) -> None:
        """Finish the command or cycle in flight, then stop (commands still queued fail)."""
        self._stopping.set()
        self._commands.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        next_cycle = time.monotonic()
        while not self._stopping.is_set():
            try:
                item = self._commands.get(timeout=max(0.0, next_cycle - time.monotonic()))
            except queue.Empty:
                item = None
            if self._stopping.is_set():
                if item is not None:
                    item[1].set_exception(Stopped("the controller is shutting down"))
                break
            if item is not None:
                command, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if not self.gate():
                        raise NotLeader("this controller is not the leader now: ask the leader")
                    result = command()
                except BaseException as exc:  # the caller gets it; the loop goes on
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            if self._woken.is_set() or time.monotonic() >= next_cycle:
                self._woken.clear()
                if self.gate():
                    self._cycle()
                next_cycle = time.monotonic() + self.interval
        self._drain()

    def _cycle(self) -> None:
        started = time.monotonic()
        try:
            report = self.controller.tick()
        except Exception:  # one bad cycle (a store error, a bug) must not stop the controller
            log.exception("controller cycle failed")
            return
        self.on_cycle(time.monotonic() - started, report)

    def _drain(self) -> None:
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(Stopped("the controller is shutting down"))
