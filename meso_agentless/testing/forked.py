"""Simulated hosts that answer samples from a process of their own, for benchmarks.

In one process the simulated hosts' CPU (building and encoding every answer) shares the
controller's GIL and core, so a round of 10,000 hosts can be slower than the controller makes
it. `forked(plane)` copies a `SimPlane` into a child process (fork: its hosts as they are then)
and gives a plane whose `sample` and `sample_round` ask the child over a pipe: one message a
round, the answers as the node command's JSON lines, decoded here (the controller's work, as
over SSH). Only sampling is forwarded: launches and stops are not, so use it for a fleet that
only samples (the benchmark's daemon lines).

    with forked(plane) as remote:
        fleet = Fleet(remote, SystemClock())
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection, Pipe

from meso_agentless.errors import MesoError
from meso_agentless.hosts.plane import NodeRefused, Unreachable
from meso_agentless.testing.fakes import FakePlane
from meso_agentless.testing.simfleet import SimPlane

CHUNK = 250  # hosts asked in one message


class ForkedPlane:
    """The sampling verbs of a SimPlane copied into a child process."""

    def __init__(self, hosts: tuple[str, ...], pipe: Connection) -> None:
        self.hosts = hosts
        self._pipe = pipe
        self._lock = threading.Lock()

    def sample_round(
        self, fields: Mapping[str, Mapping], timeout: float | None = None
    ) -> dict[str, dict | MesoError]:
        """Every host of `fields` sampled in the child: each answer, or why not. Asked a chunk
        at a time, the next one sent before this one's answers are read, so the child answers
        while the answers before are decoded here (as a pipelined round over SSH)."""
        asked = [(host, dict(its)) for host, its in fields.items()]
        chunks = [asked[i : i + CHUNK] for i in range(0, len(asked), CHUNK)]
        answers: dict[str, dict | MesoError] = {}
        with self._lock:
            if chunks:
                self._pipe.send(chunks[0])
            for i, chunk in enumerate(chunks):
                if i + 1 < len(chunks):  # one chunk ahead: the child's pipe never fills
                    self._pipe.send(chunks[i + 1])
                lines = self._pipe.recv()
                for (host, _), line in zip(chunk, lines, strict=True):
                    answers[host] = _decoded(line)
        return answers

    def sample(self, host: str, timeout: float | None = None, **fields: object) -> dict:
        answer = self.sample_round({host: fields}, timeout)[host]
        if isinstance(answer, MesoError):
            raise answer
        return answer

    def health(self, host: str, request: dict, timeout: float | None = None) -> dict:
        raise Unreachable(f"{host}: health checks are not forwarded to forked hosts")


def _decoded(line: str) -> dict | MesoError:
    answer = json.loads(line)
    if answer.get("ok"):
        answer.pop("ok")
        return answer
    kind = Unreachable if answer.get("unreachable") else NodeRefused
    return kind(answer.get("error", "refused"))


def _serve(plane: SimPlane, pipe: Connection) -> None:
    """The child: answer each round until the pipe closes."""
    while True:
        try:
            asked = pipe.recv()
        except EOFError:
            return
        lines = []
        for host, fields in asked:
            try:  # the answer as the node command encodes it (SimPlane.sample decodes it too)
                lines.append(json.dumps({"ok": True, **FakePlane.sample(plane, host, **fields)}))
            except MesoError as exc:
                unreachable = isinstance(exc, Unreachable)
                lines.append(json.dumps({"ok": False, "error": str(exc),
                                         "unreachable": unreachable}))  # fmt: skip
        pipe.send(lines)


@contextmanager
def forked(plane: SimPlane) -> Iterator[ForkedPlane]:
    """A copy of `plane`'s hosts answering samples from a child process, for the block."""
    ours, theirs = Pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the hosts, nothing else of the parent's runs here
        ours.close()
        try:
            _serve(plane, theirs)
        finally:
            os._exit(0)
    theirs.close()
    try:
        yield ForkedPlane(plane.hosts, ours)
    finally:
        ours.close()
        os.waitpid(pid, 0)
