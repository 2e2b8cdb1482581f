"""NodeConnection.stream: output as it comes, and b"" after each quiet second, so whoever
iterates (an HTTP response whose client hung up) can stop instead of waiting on a quiet unit."""

from meso_agentless.hosts import transport
from meso_agentless.inventory import Node


class QuietChannel:
    """A channel that says something, is quiet twice, says more, then ends."""

    def __init__(self) -> None:
        self.replies = [b"first\n", TimeoutError(), TimeoutError(), b"second\n", b""]
        self.timeout = None
        self.closed = False

    def settimeout(self, seconds: float) -> None:
        self.timeout = seconds

    def shutdown_write(self) -> None:
        pass

    def recv(self, _size: int) -> bytes:
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        self.closed = True


class Client:
    def __init__(self, channel: QuietChannel) -> None:
        self.channel = channel

    def get_transport(self):
        return self

    def open_session(self, timeout: float) -> QuietChannel:
        return self.channel


def test_a_stream_yields_empty_chunks_while_quiet_and_closes_its_channel(monkeypatch):
    channel = QuietChannel()
    connection = transport.NodeConnection(Node("h1", address="h1"))
    monkeypatch.setattr(connection, "_connected", lambda _deadline: Client(channel))
    monkeypatch.setattr(connection, "_start_node_command", lambda _channel, _args: None)
    chunks = list(connection.stream("logs", {"unit": "u", "follow": True}))
    assert chunks == [b"first\n", b"", b"", b"second\n"]
    assert channel.timeout == transport.QUIET and channel.closed


def test_a_reader_that_stops_while_it_is_quiet_closes_the_channel(monkeypatch):
    channel = QuietChannel()
    connection = transport.NodeConnection(Node("h1", address="h1"))
    monkeypatch.setattr(connection, "_connected", lambda _deadline: Client(channel))
    monkeypatch.setattr(connection, "_start_node_command", lambda _channel, _args: None)
    stream = connection.stream("logs", {"unit": "u", "follow": True})
    assert next(stream) == b"first\n"
    assert next(stream) == b""  # quiet: the reader has its turn, and goes
    stream.close()
    assert channel.closed


class DeadChannel(QuietChannel):
    """A channel whose transport has died: it never answers, and closing it raises."""

    def recv(self, _size: int) -> bytes:
        raise TimeoutError()

    def recv_ready(self) -> bool:
        return False

    def sendall(self, _data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        raise EOFError()


def test_a_request_on_a_dead_connection_is_unreachable_however_its_closing_fails(monkeypatch):
    """Closing a channel whose transport died raises EOFError in paramiko: it once escaped a
    sample round and ended the controller's sampler, every host then unreachable for good."""
    channel = DeadChannel()
    connection = transport.NodeConnection(Node("h1", address="h1"), timeout=0.2)
    connection._channel, connection._client = channel, channel  # type: ignore[assignment]
    monkeypatch.setattr(connection, "_serve_channel", lambda _deadline: channel)
    try:
        connection.request("sample", timeout=0.2)
    except transport.Unreachable as exc:
        assert "no answer within" in str(exc)
    else:
        raise AssertionError("a dead connection answered")
    assert channel.closed and connection._channel is None
