"""TCP connections to the hosts' sshd: dialed as paramiko dials them, and dialed ahead of need.

A cold command dials every host as soon as it has read the inventory (`ahead`), before it
imports paramiko: each host's sshd accepts and starts the connection's own process meanwhile.
`ssh.connect` takes such a connection (once) instead of dialing again, and waits for it no
longer than it would have waited for its own. Host names go to getaddrinfo as ASCII bytes: a
str costs the import of the idna codec (10 ms) before the first connection. Nothing here
imports paramiko but an error that needs its exception class.

Every socket is a `QuickAckSocket` with TCP_NODELAY. Each side of a new SSH connection writes
two small messages back to back at some step, and Nagle's algorithm holds the second until the
first is acknowledged, which the other side delays by 40 ms: ours before authentication (our
Nagle: TCP_NODELAY), sshd's when the session opens (its request after authentication, then its
reply; our delayed ACK: TCP_QUICKACK). The two were 90 ms of a cold connection's 130 ms.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections.abc import Iterable
from concurrent.futures import Future

Target = tuple[str, int]  # address, port

_ahead: dict[Target, Future[socket.socket]] = {}
_lock = threading.Lock()


QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux's alone (not macOS)


class QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once (TCP_QUICKACK, which Linux
    turns off again by itself, set before each read); a plain one where there is no such
    option, or where setting it fails (an emulation layer refusing it): a latency gain is never
    worth a connection."""

    __slots__ = ()

    def recv(self, size: int, flags: int = 0) -> bytes:
        if QUICKACK is not None:
            with contextlib.suppress(OSError):  # a closed socket's recv raises, as before
                self.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        return super().recv(size, flags)


def dial(address: str, port: int, timeout: float | None) -> socket.socket:
    """A connected socket to `address`:`port`, trying each of its addresses in turn, or the
    error paramiko's connect raises: NoValidConnectionsError when every address refused or
    was unreachable, else the socket's own (TimeoutError when none answered in time)."""
    host = address.encode("ascii") if address.isascii() else address
    errors: dict[tuple, OSError] = {}
    found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    tries = [(family, addr) for family, kind, _, _, addr in found if kind == socket.SOCK_STREAM]
    for family, addr in tries:
        sock = QuickAckSocket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                raise
            errors[addr] = exc
    from paramiko.ssh_exception import NoValidConnectionsError

    raise NoValidConnectionsError(errors)


def ahead(targets: Iterable[Target], timeout: float) -> None:
    """Dial each target now, in the background (a thread each, within `timeout`), for the
    next `take` of it."""
    for target in targets:
        with _lock:
            if target in _ahead:
                continue
            _ahead[target] = future = Future()
        threading.Thread(target=_dial_into, args=(future, *target, timeout),
                         name=f"dial-{target[0]}", daemon=True).start()  # fmt: skip


def _dial_into(future: Future[socket.socket], address: str, port: int, timeout: float) -> None:
    try:
        future.set_result(dial(address, port, timeout))
    except BaseException as exc:  # handed to whoever takes it
        future.set_exception(exc)


def take(address: str, port: int, timeout: float | None) -> socket.socket | None:
    """The connection dialed ahead to `address`:`port` (once; None if there is none), waited
    for up to `timeout`; the error it met if it failed (TimeoutError if not up in time)."""
    with _lock:
        future = _ahead.pop((address, port), None)
    if future is None:
        return None
    try:
        return future.result(timeout)
    except TimeoutError:
        if future.done():
            return future.result()  # raises the dial's own error, if it failed
        future.add_done_callback(_close)  # up too late: closed when it is
        raise TimeoutError("timed out") from None  # as a socket says it


def _close(future: Future[socket.socket]) -> None:
    if not future.exception():
        future.result().close()


def forget() -> None:
    """Close every connection dialed ahead and not taken (a command that ends early)."""
    with _lock:
        futures = list(_ahead.values())
        _ahead.clear()
    for future in futures:
        future.add_done_callback(_close)
