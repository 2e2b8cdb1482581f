"""A task's end seen at once: the node command's `watch` writes a line when systemd signals that
a meso unit ended, `hosts.watching.Watches` reads every host's in one thread, and the fleet
samples that host between its rounds. Here against a peer that speaks systemd's private socket
and channels over socket pairs; tests/lab/test_watch.py runs it on real hosts."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.fleet import Fleet
from meso_agentless.errors import MesoError
from meso_agentless.hosts import watching
from meso_agentless.hosts.plane import Unreachable
from meso_agentless.hosts.watching import Watches
from meso_agentless.node import nodecmd
from meso_agentless.testing.simfleet import SimPlane
from tests.unit.test_fleet_rounds import until

UNIT_IFACE, SERVICE_IFACE = "org.freedesktop.systemd1.Unit", "org.freedesktop.systemd1.Service"


def changed(unit: str, interface: str, **values: str) -> bytes:
    """PropertiesChanged as systemd sends it for a unit's object."""
    label = "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in unit)
    fields = {nodecmd.F_PATH: ("o", f"/org/freedesktop/systemd1/unit/{label}"),
              nodecmd.F_INTERFACE: ("s", "org.freedesktop.DBus.Properties"),
              nodecmd.F_MEMBER: ("s", "PropertiesChanged")}  # fmt: skip
    body = [interface, [(k, ("s", v)) for k, v in values.items()], []]
    return nodecmd.dbus_message(nodecmd.SIGNAL, 7, fields, "sa{sv}as", body)


def test_a_dict_of_variants_comes_back_as_it_went():
    body = ["x", [("SubState", ("s", "exited")), ("NRestarts", ("u", 3))], ["Result"]]
    data = bytearray()
    nodecmd.marshal(data, "sa{sv}as", body)
    assert nodecmd.unmarshal(bytes(data), "sa{sv}as")[0] == [
        "x", [("SubState", ("s", "exited")), ("NRestarts", ("u", 3))], ["Result"]]  # fmt: skip


@pytest.mark.parametrize(
    ("message", "ended"),
    [
        (changed("meso-j_t_0_1.service", UNIT_IFACE, ActiveState="active", SubState="exited"),
         "meso-j_t_0_1.service"),
        (changed("meso-j_t_0_1.service", UNIT_IFACE, ActiveState="failed", SubState="failed"),
         "meso-j_t_0_1.service"),
        (changed("meso-web_a-b_2_1.service", UNIT_IFACE, SubState="auto-restart"),
         "meso-web_a-b_2_1.service"),
        (changed("meso-j_t_0_1.service", UNIT_IFACE, SubState="dead"), None),  # stopped
        (changed("meso-j_t_0_1.service", UNIT_IFACE, ActiveState="active", SubState="running"),
         None),
        (changed("meso-j_t_0_1.service", SERVICE_IFACE, SubState="exited"), None),
        (changed("sshd.service", UNIT_IFACE, SubState="dead"), None),
    ],
)  # fmt: skip
def test_only_a_meso_unit_reaching_an_end_state_counts(message, ended):
    buf = bytearray(message)
    assert nodecmd.ended_unit(nodecmd.read_message(buf)) == ended


def systemd_peer(path, then: list[bytes], close: threading.Event) -> None:
    """systemd's private socket for one connection: the auth, then `then` sent unasked and
    every call answered, until `close` is set: then the connection is closed."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        said = b""
        while not said.endswith(b"\r\n"):
            said += conn.recv(4096)
        conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        while b"BEGIN\r\n" not in said:
            said += conn.recv(4096)
        buf = bytearray(said.partition(b"BEGIN\r\n")[2])
        for message in then:
            conn.sendall(message)
        conn.settimeout(0.05)
        while not close.is_set():  # a Ping (the node's greeting) is answered
            while (message := nodecmd.read_message(buf)) is not None:
                fields = {nodecmd.F_REPLY: ("u", message.serial)}
                conn.sendall(nodecmd.dbus_message(nodecmd.METHOD_RETURN, 9, fields))
            with contextlib.suppress(TimeoutError):
                buf += conn.recv(4096)
        conn.close()
        server.close()

    threading.Thread(target=run, daemon=True).start()


def watch_process(path) -> subprocess.Popen:
    """The node command's watch (as root) on the peer's socket."""
    script = (
        "import os, sys; from meso_agentless.node import nodecmd; os.geteuid = lambda: 0; "
        f"nodecmd.SYSTEMD_PRIVATE = {str(path)!r}; sys.exit(nodecmd.watch({{}}))"
    )
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_the_watch_writes_a_line_per_ended_meso_unit_and_ends_with_systemds_connection(tmp_path):
    close = threading.Event()
    signals = [
        changed("meso-j_t_0_1.service", UNIT_IFACE, SubState="running"),
        changed("other.service", UNIT_IFACE, SubState="dead"),
        changed("meso-j_t_0_1.service", SERVICE_IFACE, SubState="exited"),
        changed("meso-j_t_0_1.service", UNIT_IFACE, SubState="exited"),
        changed("meso-j_t_1_1.service", UNIT_IFACE, SubState="failed"),
    ]
    systemd_peer(tmp_path / "private", signals, close)
    process = watch_process(tmp_path / "private")
    lines = [json.loads(process.stdout.readline()) for _ in range(3)]
    assert lines == [{"ok": True, "watching": True}, {"ended": "meso-j_t_0_1.service"},
                     {"ended": "meso-j_t_1_1.service"}]  # fmt: skip
    close.set()  # systemd goes (a daemon-reexec, a shutdown): the watch ends and says why
    said = json.loads(process.stdout.readline())
    assert process.wait(timeout=10) == 1
    assert said["ok"] is False and "watch: systemd's connection" in said["error"]
    process.stdin.close()


def test_the_watch_ends_when_the_controller_hangs_up(tmp_path):
    close = threading.Event()
    systemd_peer(tmp_path / "private", [], close)
    process = watch_process(tmp_path / "private")
    assert json.loads(process.stdout.readline()) == {"ok": True, "watching": True}
    process.stdin.close()
    assert process.wait(timeout=10) == 0
    close.set()


def test_a_watch_that_cannot_be_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nodecmd.os, "geteuid", lambda: 1000)
    assert nodecmd.main(["watch"]) == 2
    assert json.loads(capsys.readouterr().out) == {
        "ok": False, "error": "watch: needs root (systemd's private socket)"}  # fmt: skip
    monkeypatch.setattr(nodecmd.os, "geteuid", lambda: 0)
    monkeypatch.setattr(nodecmd, "SYSTEMD_PRIVATE", str(tmp_path / "none"))
    assert nodecmd.main(["watch", '{"x": 1}']) == 2
    assert "x" in json.loads(capsys.readouterr().out)["error"]
    assert nodecmd.main(["watch"]) == 2
    assert "watch: systemd's private socket:" in json.loads(capsys.readouterr().out)["error"]
    assert "watch" in nodecmd.from_ssh("watch")


# -- the controller's side: one thread reads every host's watch --------------------------------


class Channel:
    """One end of a socket pair as the watches see a paramiko channel; the node's end is `node`."""

    def __init__(self) -> None:
        self.sock, self.node = socket.socketpair()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, blocking: bool) -> None:
        self.sock.setblocking(blocking)

    def recv(self, size: int) -> bytes:
        try:
            return self.sock.recv(size)
        except BlockingIOError:  # as paramiko's channel says it, without a blocking one
            raise TimeoutError() from None

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_stderr(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def say(self, *lines: dict | bytes) -> None:
        self.node.sendall(b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n"
                                   for x in lines))  # fmt: skip


class Hosts:
    """Opens a channel per host as asked (`refuse` makes it fail); each new one says it watches."""

    def __init__(self) -> None:
        self.opened: dict[str, list[Channel]] = {}
        self.refuse: set[str] = set()  # unreachable
        self.cannot: set[str] = set()  # whose node command cannot watch
        self.ended: list[str] = []

    def open(self, host: str) -> Channel:
        if host in self.refuse:
            raise Unreachable(f"{host}: no route")
        channel = Channel()
        if host in self.cannot:
            channel.say({"ok": False, "error": "watch: needs root"})
        else:
            channel.say({"ok": True, "watching": True})
        self.opened.setdefault(host, []).append(channel)
        return channel


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(watching, "TICK", 0.02)
    monkeypatch.setattr(watching, "BACKOFF", (0.05, 0.1))
    monkeypatch.setattr(watching, "REFUSED_PAUSE", 3600.0)


def test_each_line_of_a_hosts_watch_says_so_and_a_broken_watch_is_opened_again(fast):
    hosts = Hosts()
    watches = Watches(hosts.open, hosts.ended.append)
    watches.start()
    try:
        watches.add(["a", "b"])
        until(lambda: watches.watched == {"a", "b"})
        hosts.opened["a"][0].say({"ended": "meso-j_t_0_1.service"},
                                 b'{"ended": "meso-j_t_1_1.ser', b'vice"}\n')  # fmt: skip
        hosts.opened["b"][0].say({"ended": "meso-k_t_0_1.service"})
        until(lambda: sorted(hosts.ended) == ["a", "a", "b"])
        hosts.opened["a"][0].node.close()  # the node command ended (or the connection dropped)
        until(lambda: len(hosts.opened["a"]) == 2 and watches.watched == {"a", "b"})
        assert hosts.opened["a"][0].closed
        hosts.opened["b"][0].say(b"garbage\n")  # not the protocol: closed, opened again
        until(lambda: len(hosts.opened["b"]) == 2 and watches.watched == {"a", "b"})
        hosts.opened["b"][1].say({"ended": "meso-k_t_0_1.service"})
        until(lambda: hosts.ended.count("b") == 2)
        # systemd's connection ended under a watch that watched: not a refusal, soon again
        hosts.opened["b"][1].say({"ok": False, "error": "watch: systemd's connection: closed"})
        until(lambda: len(hosts.opened["b"]) == 3 and watches.watched == {"a", "b"})
        watches.add(["a", "b", "c"])  # a new host: watched; the others keep theirs
        until(lambda: watches.watched == {"a", "b", "c"})
        assert (len(hosts.opened["a"]), len(hosts.opened["b"])) == (2, 3)
    finally:
        watches.stop()
    assert all(c.closed for cs in hosts.opened.values() for c in cs)
    assert not [t for t in threading.enumerate() if t.name.startswith(("watches", "watch-open"))]


def test_a_host_that_cannot_watch_is_left_to_its_rounds_and_one_unreachable_is_tried_again(fast):
    hosts = Hosts()
    hosts.refuse.add("cut")
    hosts.cannot.add("user")
    watches = Watches(hosts.open, hosts.ended.append)
    watches.start()
    try:
        watches.add(["cut", "user"])
        until(lambda: "user" in hosts.opened and hosts.opened["user"][0].closed)
        time.sleep(0.5)  # many backoffs of a failure, none of the pause of a refusal
        assert len(hosts.opened["user"]) == 1 and watches.watched == set()
        hosts.refuse.clear()  # the cut host is back: opened on its next try
        until(lambda: watches.watched == {"cut"})
        watches.back("user")  # answering again does not lift a refusal's pause
        time.sleep(0.3)
        assert len(hosts.opened["user"]) == 1
    finally:
        watches.stop()


class WatchedPlane(SimPlane):
    """Simulated hosts with a watch each; every round's hosts are logged."""

    def __init__(self, count: int) -> None:
        fresh = SimPlane.of(count)
        super().__init__(fresh.by_name, fresh.clock)
        self.channels: dict[str, Channel] = {}
        self.rounds: list[list[str]] = []

    def watch_channel(self, host: str) -> Channel:
        channel = self.channels[host] = Channel()
        channel.say({"ok": True, "watching": True})
        return channel

    def sample_round(self, fields, timeout=None) -> dict[str, dict | MesoError]:
        self.rounds.append(sorted(fields))
        return super().sample_round(fields, timeout)


def test_the_fleet_samples_a_host_whose_watch_says_a_unit_ended_without_waiting_its_round():
    plane = WatchedPlane(3)
    fleet = Fleet(plane, SystemClock(), interval=60.0, suspect_after=120, unreachable_after=180,
                  watch=True)  # fmt: skip
    fleet.start()
    try:
        until(lambda: len(plane.channels) == 3)
        assert len(plane.rounds) == 1  # the first round; the next one is a minute away
        host = sorted(plane.channels)[1]
        plane.channels[host].say({"ended": "meso-j_t_0_1.service"})
        until(lambda: plane.rounds[1:] == [[host]])
    finally:
        fleet.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith(("watches", "watch-open"))]


def test_the_controller_may_open_as_many_files_as_the_hard_limit_allows():
    import resource

    from meso_agentless.controller.daemon import raise_open_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
    raise_open_files()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_a_fleet_not_told_to_watch_opens_no_watch():
    plane = WatchedPlane(3)
    fleet = Fleet(plane, SystemClock(), interval=0.05)
    fleet.start()
    try:
        until(lambda: len(plane.rounds) >= 5)
    finally:
        fleet.stop()
    assert plane.channels == {}


class ChattyChannel(Channel):
    """A watch whose node command wrote to stderr: its descriptor says ready, stdout is empty."""

    def __init__(self) -> None:
        super().__init__()
        self.stderr = [b"a warning\n", b"another\n"]

    def recv_stderr_ready(self) -> bool:
        return bool(self.stderr)

    def recv_stderr(self, size: int) -> bytes:
        return self.stderr.pop(0)


def test_what_a_watch_writes_on_stderr_is_read_away_and_the_watch_stays():
    watches = Watches(Hosts().open, [].append)
    channel = ChattyChannel()
    channel.setblocking(False)
    watches._channels["a"], watches._buffers["a"] = channel, b""
    watches._selector.register(channel, selectors.EVENT_READ, "a")
    watches._read("a")  # nothing on stdout: stderr read away (else ready for good)
    assert channel.stderr == [] and not channel.closed and "a" in watches._channels
    watches.stop()


def test_a_host_answering_again_has_its_watch_tried_at_once(monkeypatch):
    monkeypatch.setattr(watching, "TICK", 0.02)
    monkeypatch.setattr(watching, "BACKOFF", (30.0,))  # a failed open waits long
    hosts = Hosts()
    hosts.refuse.add("a")
    watches = Watches(hosts.open, hosts.ended.append)
    watches.start()
    try:
        watches.add(["a"])
        time.sleep(0.3)  # tried once, failed: the next try is 30 s away
        hosts.refuse.clear()
        time.sleep(0.3)
        assert "a" not in hosts.opened
        watches.back("a")  # the fleet heard from it again (a reboot, a cut healed)
        until(lambda: watches.watched == {"a"}, timeout=5)
    finally:
        watches.stop()


def test_lines_after_one_that_closed_the_watch_are_not_read(fast):
    hosts = Hosts()
    watches = Watches(hosts.open, hosts.ended.append)
    watches.start()
    try:
        watches.add(["a"])
        until(lambda: watches.watched == {"a"})
        hosts.opened["a"][0].say(b"garbage\nmore garbage\n", {"ended": "meso-j_t_0_1.service"})
        until(lambda: len(hosts.opened["a"]) == 2 and watches.watched == {"a"})
        hosts.opened["a"][1].say({"ended": "meso-j_t_0_1.service"})  # the reader still reads
        until(lambda: hosts.ended == ["a"])
    finally:
        watches.stop()
