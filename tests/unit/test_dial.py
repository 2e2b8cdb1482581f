"""TCP connections dialed ahead of need (hosts/dial.py) and the connect that takes them: real
sockets on loopback; what fails fails as paramiko's own connect says it."""

import itertools
import socket
import threading
import time

import paramiko
import pytest

from meso_agentless.hosts import dial, ssh
from meso_agentless.hosts.transport import NodeConnection
from meso_agentless.inventory import Node


@pytest.fixture
def server():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        yield listening
    dial.forget()


@pytest.fixture
def closed_port():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_connection_dialed_ahead_is_taken_once(server):
    port = server.getsockname()[1]
    dial.ahead([("127.0.0.1", port)], timeout=5)
    sock = dial.take("127.0.0.1", port, timeout=5)
    accepted, _ = server.accept()
    with sock, accepted:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert accepted.getpeername() == sock.getsockname()
    assert dial.take("127.0.0.1", port, timeout=5) is None  # once


def exchange(sock: socket.socket, rounds: int = 5) -> list[int]:
    """Requests and answers on `sock` (to an echoing server); whether the socket was left
    acknowledging at once (TCP_QUICKACK) after each answer was read."""
    modes = []
    for i in range(rounds):
        sock.sendall(b"request %d" % i)
        sock.recv(100)
        modes.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))
    return modes


@pytest.mark.skipif(dial.QUICKACK is None, reason="TCP_QUICKACK is Linux's")
def test_a_dialed_socket_sends_at_once_and_acknowledges_at_once(server):
    """Linux delays ACKs again once it sees requests and answers (a plain socket here reads 0
    after the first exchange); against sshd's Nagle each such delay stalled 40 ms."""
    port = server.getsockname()[1]

    def echo() -> None:
        accepted, _ = server.accept()
        with accepted:
            while data := accepted.recv(100):
                accepted.sendall(b"answer to " + data)

    threading.Thread(target=echo, daemon=True).start()
    with dial.dial("127.0.0.1", port, timeout=5) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert exchange(sock) == [1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "option",
    [4242,  # an option the kernel refuses (ENOPROTOOPT), as an emulation layer may
     None],  # none at all, as on macOS, where a laptop runs meso
)  # fmt: skip
def test_without_quick_acks_a_dialed_socket_reads_as_a_plain_one(server, monkeypatch, option):
    monkeypatch.setattr(dial, "QUICKACK", option)
    port = server.getsockname()[1]
    with dial.dial("127.0.0.1", port, timeout=5) as sock:
        accepted, _ = server.accept()
        with accepted:
            accepted.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            assert sock.recv(100) == b"SSH-2.0-OpenSSH_9.2\r\n"


def test_a_refused_dial_fails_as_paramiko_says(closed_port):
    client = paramiko.SSHClient()
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError) as by_paramiko:
        client.connect("127.0.0.1", port=closed_port, timeout=5)
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError) as by_dial:
        dial.dial("127.0.0.1", closed_port, timeout=5)
    assert str(by_dial.value) == str(by_paramiko.value)
    dial.ahead([("127.0.0.1", closed_port)], timeout=5)
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError) as ahead:
        dial.take("127.0.0.1", closed_port, timeout=5)
    assert str(ahead.value) == str(by_paramiko.value)


def test_a_dial_not_up_by_the_takers_deadline_times_out_as_a_socket_does():
    """A listener whose queue is full drops new connections (as a cut host does)."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(8):  # until one does not get through
            filler = socket.socket()
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                filler.close()
                break
            fillers.append(filler)
        else:
            pytest.fail("the listener's queue never filled")
        dial.ahead([("127.0.0.1", port)], timeout=30)
        with pytest.raises(TimeoutError, match=r"^timed out$"):
            dial.take("127.0.0.1", port, timeout=0.1)
        for filler in fillers:
            filler.close()
    dial.forget()


def test_connect_takes_the_connection_dialed_ahead(server, tmp_path):
    """ssh.connect uses the socket dialed ahead: the listener (no sshd) sees that one
    connection only, and the handshake fails on it as on any non-SSH port."""
    port = server.getsockname()[1]
    (tmp_path / "known_hosts").write_text("")
    dial.ahead([("127.0.0.1", port)], timeout=5)
    server.settimeout(5)
    accepted, _ = server.accept()
    accepted.sendall(b"not ssh\r\n")
    accepted.close()
    with pytest.raises(ssh.SSHError, match=r"^127\.0\.0\.1: "):
        ssh.connect("127.0.0.1", user="root", key_file=None, port=port,
                    known_hosts=tmp_path / "known_hosts", timeout=5)  # fmt: skip
    server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        server.accept()  # nothing dialed again


def node_connection(monkeypatch, outcomes):
    """A NodeConnection whose every connect attempt takes the next outcome (an exception to
    raise, or a client to return); the attempts' times are recorded."""
    attempts = []

    def connect(*_args, **_kwargs):
        attempts.append(time.monotonic())
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(ssh, "connect", connect)
    return NodeConnection(Node("h1", address="127.0.0.1")), attempts


def test_a_failed_connect_is_tried_again_with_backoff(monkeypatch):
    client = object()
    connection, attempts = node_connection(
        monkeypatch, [ssh.SSHError("refused"), ssh.SSHError("refused"), client]
    )
    assert connection._connect_with_backoff(time.monotonic() + 10) is client
    waits = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(waits) == 2 and waits[0] >= 0.1 and waits[1] >= 0.2  # at least, by backoff


def test_a_refused_host_key_is_not_tried_again(monkeypatch):
    connection, attempts = node_connection(monkeypatch, [ssh.HostKeyError("changed"), object()])
    with pytest.raises(ssh.HostKeyError):
        connection._connect_with_backoff(time.monotonic() + 10)
    assert len(attempts) == 1


def test_no_try_starts_past_the_deadline(monkeypatch):
    connection, attempts = node_connection(monkeypatch, [ssh.SSHError("timed out"), object()])
    with pytest.raises(ssh.SSHError, match="timed out"):
        connection._connect_with_backoff(time.monotonic() + 0.05)
    assert len(attempts) == 1
