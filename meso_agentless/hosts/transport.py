"""The controller's hands on a host: one persistent SSH connection and one warm node command.

`NodeConnection` keeps a paramiko transport per host (TCP_NODELAY, keepalive) and, on it, one
session running the node command's `serve` verb: requests go down as JSON lines and answers
come back the same way, so a launch costs one round trip and no process start. On hosts where
the node command is not installed it is streamed to `python3` first (root hosts).

Every call has a deadline. A host that does not answer in time is reported unreachable (not
dead): the connection is dropped and reopened on the next call, with backoff (tenacity). A host
whose key is unknown or changed is refused at once and never retried into.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from meso_agentless.errors import MesoError
from meso_agentless.hosts import ssh
from meso_agentless.hosts.launching import NODE_POLICY
from meso_agentless.inventory import Node
from meso_agentless.node import bootstrap_source, node_command_source

# Reads the node command's source (length-prefixed) from stdin and runs it (its compiled code
# cached on the host); the rest of stdin is then the command's own input.
BOOTSTRAP = bootstrap_source()
DEFAULT_TIMEOUT = 20.0
MAX_HANDSHAKES = threading.BoundedSemaphore(16)  # SSH handshakes in flight, process-wide
QUIET = 1.0  # seconds a stream may be quiet before it yields b"" (its reader may have gone)
MAX_CONNECTING = 32  # hosts connected at once by ask_each
FIRST_BACKOFF = 0.1  # seconds before a second try to connect (then twice as long each time)
# what a connection's failure raises, from ssh, the socket or paramiko: the host is unreachable
TRANSPORT_ERRORS = (ssh.SSHError, OSError, EOFError, paramiko.SSHException)
T = TypeVar("T")


class Unreachable(MesoError):
    """The host could not be asked (network, sshd, timeout). Its tasks are not known to be lost."""


class NodeRefused(MesoError):
    """The node command refused a request; the message names the field or the reason."""


class NodeConnection:
    """One host, one connection, one warm node command; safe to share between threads."""

    def __init__(self, node: Node, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout
        self._client: paramiko.SSHClient | None = None
        self._channel: paramiko.Channel | None = None
        self._buffer = b""
        self._late = 0  # answers still owed to requests whose reader stopped waiting
        self._lock = threading.Lock()

    # -- requests ------------------------------------------------------------------------------

    def request(self, verb: str, timeout: float | None = None, **fields: Any) -> dict:
        """Send one request to the node command and return its answer (ok is checked)."""
        return self.ask(verb, fields, timeout)

    def ask(self, verb: str, fields: dict, timeout: float | None = None) -> dict:
        """request(), with the fields as a mapping (one may be called `timeout`)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._lock:
            self._send(verb, fields, deadline)
            reply = self._receive(deadline)
        return self._answer(reply)

    @property
    def warm(self) -> bool:
        """Whether the node command is up on an open channel (a request costs a round trip)."""
        return self._channel is not None and not self._channel.closed

    def _send(self, verb: str, fields: dict, deadline: float) -> None:
        """Send one request line (connecting first if need be); the lock is held."""
        line = json.dumps({"verb": verb, **fields}).encode() + b"\n"
        self._guarded(lambda: self._serve_channel(deadline).sendall(line))

    def _receive(self, deadline: float) -> bytes:
        """The answer to the last request sent on the serve channel (those still owed to
        earlier ones read and dropped first); the lock is held."""
        while self._late:
            self._guarded(lambda: self._read_line(self._channel, deadline))  # type: ignore[arg-type]
            self._late -= 1
        return self._guarded(lambda: self._read_line(self._channel, deadline))  # type: ignore[arg-type]

    def _guarded(self, step: Callable[[], T]) -> T:
        """`step`; a transport failure drops the connection and is Unreachable (a host key
        refused is raised as it is)."""
        try:
            return step()
        except TRANSPORT_ERRORS as exc:
            self._drop()
            if isinstance(exc, ssh.HostKeyError):
                raise
            raise Unreachable(f"{self.node.name}: {exc}") from exc

    def _answer_in(self) -> bool:
        """Whether an answer (or the channel's end) is here to read; the lock is held."""
        channel = self._channel
        return b"\n" in self._buffer or channel is None or channel.recv_ready() or channel.closed

    def _answer(self, reply: bytes) -> dict:
        try:
            answer = json.loads(reply)
        except ValueError:
            raise NodeRefused(f"{self.node.name}: not an answer from the node command: "
                              f"{reply[:200]!r}") from None  # fmt: skip
        if not isinstance(answer, dict) or not answer.pop("ok", False):
            error = answer.get("error", "refused") if isinstance(answer, dict) else answer
            raise NodeRefused(f"{self.node.name}: {error}")
        return answer

    def stream(self, verb: str, request: dict, timeout: float | None = None) -> Iterator[bytes]:
        """Run one verb on its own channel (logs) and yield its output as it comes, and b""
        after each quiet second: a reader that has gone (an HTTP client that hung up) is
        noticed by whoever iterates, instead of a thread waiting on a quiet unit for good."""
        channel = self.open_channel(verb, request, timeout)
        try:
            channel.shutdown_write()
            channel.settimeout(QUIET)
            while True:
                try:
                    data = channel.recv(65536)
                except TimeoutError:
                    yield b""
                    continue
                if not data:
                    break
                yield data
        finally:
            channel.close()

    def open_channel(
        self, verb: str, request: dict, timeout: float | None = None
    ) -> paramiko.Channel:
        """A channel of its own on this host's connection (connecting first if need be, within
        `timeout`, however long a request under way holds the connection), running the node
        command's `verb`: a process of its own on the host, for answers that keep coming (logs,
        watch)."""
        wait = timeout or self.timeout
        deadline = time.monotonic() + wait
        if not self._lock.acquire(timeout=wait):
            raise Unreachable(f"{self.node.name}: busy with a request for {wait:.0f} s")
        try:
            client = self._guarded(lambda: self._connected(deadline))
        finally:
            self._lock.release()
        channel = client.get_transport().open_session(timeout=self.timeout)  # type: ignore[union-attr]
        try:
            self._start_node_command(channel, [verb, json.dumps(request)])
        except BaseException:
            channel.close()
            raise
        return channel

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- plumbing ------------------------------------------------------------------------------

    def _connected(self, deadline: float) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client else None
        if transport is not None and transport.is_active():
            return self._client  # type: ignore[return-value]
        self._drop()
        self._client = self._connect_with_backoff(deadline)
        return self._client

    def _connect_with_backoff(self, deadline: float) -> paramiko.SSHClient:
        """Connect, trying again with exponential backoff (tenacity) while the next try would
        start before the deadline; a host key refused is not tried again. The first try goes
        without tenacity, imported for a second one only: a cold command connects sooner."""
        try:
            return self._connect_once(deadline)
        except ssh.HostKeyError:
            raise
        except Exception:
            if time.monotonic() + FIRST_BACKOFF >= deadline:
                raise
        time.sleep(FIRST_BACKOFF)
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: not isinstance(e, ssh.HostKeyError)),
            wait=tenacity.wait_exponential(multiplier=2 * FIRST_BACKOFF, max=2.0),
            stop=tenacity.stop_before_delay(max(0.1, deadline - time.monotonic())),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._connect_once(deadline)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _connect_once(self, deadline: float) -> paramiko.SSHClient:
        node = self.node
        with MAX_HANDSHAKES:
            return ssh.connect(
                node.address,
                user=node.user,
                port=node.port,
                key_file=Path(node.key_file) if node.key_file else None,
                known_hosts=node.known_hosts_path(),
                timeout=max(0.5, min(10.0, deadline - time.monotonic())),
            )

    def _serve_channel(self, deadline: float) -> paramiko.Channel:
        if self._channel is not None and not self._channel.closed:
            return self._channel
        client = self._connected(deadline)
        channel = client.get_transport().open_session(timeout=self.timeout)  # type: ignore[union-attr]
        self._start_node_command(channel, ["serve"])
        self._channel, self._buffer = channel, b""
        if self.node.node_mode != "installed":
            self._send_policy(channel, deadline)
        return channel

    def _send_policy(self, channel: paramiko.Channel, deadline: float) -> None:
        """First request on a streamed host's serve channel: the controller's default policy
        (no root tasks, the sandbox minimum, default limits). The node only tightens its own
        policy with it, for this connection; a host that refuses it gets nothing else."""
        channel.sendall(json.dumps({"verb": "policy", "policy": NODE_POLICY}).encode() + b"\n")
        reply = self._read_line(channel, deadline)
        try:
            ok = json.loads(reply).get("ok") is True
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            self._drop()
            raise NodeRefused(f"{self.node.name}: refused the controller's policy: {reply[:200]!r}")

    def _start_node_command(self, channel: paramiko.Channel, args: list[str]) -> None:
        if self.node.node_mode == "installed":  # the key's forced command takes it from here
            channel.exec_command(ssh.shlex_join(args))
            return
        source = node_command_source()  # python3 isolated (no PYTHON* variables, no user or
        # working directory on the path) and without site (stdlib only): 8 ms less per start
        channel.exec_command(ssh.shlex_join(["python3", "-I", "-S", "-c", BOOTSTRAP, *args]))
        channel.sendall(f"{len(source)}\n".encode() + source)

    def _read_line(self, channel: paramiko.Channel, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not channel.recv_ready():  # an answer already here is not late
                raise ssh.SSHError(f"no answer within {self.timeout:.0f} s")
            channel.settimeout(max(remaining, 0.001))
            try:
                data = channel.recv(65536)
            except TimeoutError as exc:
                raise ssh.SSHError(f"no answer within {self.timeout:.0f} s") from exc
            if not data:
                err = channel.recv_stderr(4096).decode(errors="replace").strip().splitlines()
                raise ssh.SSHError(f"node command ended: {err[-1] if err else 'no output'}")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _drop(self) -> None:
        """Close the channel and the connection; closing one whose transport is already dead
        raises (EOFError from paramiko), which must not replace the error being handled."""
        for thing in (self._channel, self._client):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._channel = self._client = None
        self._buffer, self._late = b"", 0


def ask_each(
    calls: Sequence[tuple[NodeConnection, str, dict]], timeout: float | None = None
) -> list[dict | MesoError]:
    """Each call's answer, or the MesoError it met (Unreachable, NodeRefused, a host key
    refused), in order: one request to every warm host, all sent before any answer is read, so
    a round over warm hosts takes one round trip, not one per host in turn. Hosts without a warm
    channel, or whose connection is busy with another request (a stop waiting out its grace
    period), are connected and asked meanwhile, in parallel, each on its own and within the
    deadline: a host that does not answer holds up no other host. One call per connection."""
    connections = [c for c, _, _ in calls]
    if len(set(map(id, connections))) != len(connections):
        raise ValueError("ask_each: one call per connection")
    if not calls:
        return []
    deadline = time.monotonic() + (timeout or min(c.timeout for c in connections))
    results: list[dict | MesoError | None] = [None] * len(calls)
    warm = [i for i, c in enumerate(connections) if c.warm and c._lock.acquire(blocking=False)]
    alone = sorted(set(range(len(calls))) - set(warm))
    if not alone:
        _pipelined(calls, warm, results, deadline)
        return results  # type: ignore[return-value]
    with ThreadPoolExecutor(max_workers=min(MAX_CONNECTING, len(alone))) as pool:
        asked = {i: pool.submit(_ask_one, calls[i], deadline) for i in alone}
        _pipelined(calls, warm, results, deadline)
        for i, future in asked.items():
            results[i] = future.result()
    return results  # type: ignore[return-value]


def _ask_one(call: tuple[NodeConnection, str, dict], deadline: float) -> dict | MesoError:
    """One host's answer (connecting first, waiting for its connection until the deadline if
    another request holds it), or the MesoError it met."""
    connection, verb, fields = call
    if not connection._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        return Unreachable(f"{connection.node.name}: busy with another request past the deadline")
    try:
        connection._send(verb, fields, deadline)
        return connection._answer(connection._receive(deadline))
    except MesoError as exc:
        return exc
    finally:
        connection._lock.release()


def _pipelined(
    calls: Sequence[tuple[NodeConnection, str, dict]],
    indices: Iterable[int],
    results: list[dict | MesoError | None],
    deadline: float,
) -> None:
    """ask_each's warm calls at `indices`, whose connections' locks are held: every request
    sent, then the answers read as they come, each host's lock released at its answer."""
    mine = list(indices)
    held = {id(calls[i][0]): calls[i][0] for i in mine}
    try:
        waiting = {}
        for i in mine:
            connection, verb, fields = calls[i]
            try:
                connection._send(verb, fields, deadline)
                waiting[i] = connection
                continue
            except MesoError as exc:
                results[i] = exc
            held.pop(id(connection))._lock.release()
        while waiting:  # answers as they come: a slow host holds up no other host's lock
            for i in _answered(waiting, deadline):
                connection = waiting.pop(i)
                if connection._answer_in():
                    try:
                        results[i] = connection._answer(connection._receive(deadline))
                    except MesoError as exc:
                        results[i] = exc
                else:  # late, not gone: its answer is read before the next one, the
                    connection._late += 1  # connection kept (a slow host reconnects no more)
                    results[i] = Unreachable(f"{connection.node.name}: no answer by the "
                                             "round's deadline (still awaited)")  # fmt: skip
                held.pop(id(connection))._lock.release()
    finally:
        for connection in held.values():
            connection._lock.release()


def _answered(waiting: dict[int, NodeConnection], deadline: float) -> list[int]:
    """Which of the `waiting` requests have an answer in (or a channel that ended), waiting
    for one until the deadline; once it has passed, all (their reads then fail at once)."""
    ready = [i for i, c in waiting.items() if c._answer_in()]
    remaining = deadline - time.monotonic()
    if ready or remaining <= 0:
        return ready or list(waiting)
    with selectors.DefaultSelector() as selector:
        for i, connection in waiting.items():
            selector.register(connection._channel.fileno(), selectors.EVENT_READ, i)  # type: ignore[union-attr]
        return [key.data for key, _ in selector.select(remaining)]
