"""The node's D-Bus wire section (marshalling, messages) and the translation of plan_launch's
systemd-run argv into StartTransientUnit's properties (see nodecmd's D-Bus section)."""

import inspect
import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meso_agentless.node import nodecmd
from tests.unit.test_node_pinning import host, pin  # noqa: F401  (a fixture, used by name)

# A method return systemd 252 sent on its private socket for Manager.GetDefaultTarget (serial 1),
# read off a lab host's /run/systemd/private.
SYSTEMD_REPLY = (
    b"l\x02\x01\x01\x15\x00\x00\x00\x01\x00\x00\x007\x00\x00\x00\x05\x01u\x00\x01\x00\x00\x00"
    b"\x07\x01s\x00\x18\x00\x00\x00org.freedesktop.systemd1\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x08\x01g\x00\x01s\x00\x00\x10\x00\x00\x00graphical.target\x00"
)


def roundtrip(signature: str, values: list) -> list:
    buf = bytearray()
    nodecmd.marshal(buf, signature, values)
    out, end = nodecmd.unmarshal(bytes(buf), signature)
    assert end == len(buf)
    return out


U32 = st.integers(0, 2**32 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@given(
    y=st.integers(0, 255), b=st.booleans(), u=U32, i=st.integers(-(2**31), 2**31 - 1),
    t=st.integers(0, 2**64 - 1), s=TEXT, ay=st.binary(max_size=40),
    env=st.lists(TEXT, max_size=5),
)  # fmt: skip
def test_every_type_used_comes_back_as_it_went(y, b, u, i, t, s, ay, env):
    values = [y, b, u, i, t, s, "/org/freedesktop/systemd1/job/7", "a(sv)", ay, env,
              (y, (s, t)), ("s", s), ("a(sasb)", [(s, env, b)]),
              [("Id", ("t", t)), ("B", ("b", b))]]  # fmt: skip
    signature = "ybuitsogayas(y(st))vva(sv)"
    assert roundtrip(signature, values) == values


def test_values_are_aligned_to_their_size_from_the_start():
    buf = bytearray()
    nodecmd.marshal(buf, "yt", [1, 2])
    assert bytes(buf) == b"\x01" + bytes(7) + struct.pack("<Q", 2)
    buf = bytearray()
    nodecmd.marshal(buf, "ysy", [1, "ab", 2])  # a string: its length at 4, its bytes, a NUL
    assert bytes(buf) == b"\x01\0\0\0" + struct.pack("<I", 2) + b"ab\0" + b"\x02"
    buf = bytearray(b"\x09")  # an array of structs: its length does not count the padding
    nodecmd.marshal(buf, "a(yy)", [[(1, 2)]])
    assert bytes(buf) == b"\x09\0\0\0" + struct.pack("<I", 2) + b"\x01\x02"
    buf = bytearray()
    nodecmd.marshal(buf, "a(yy)", [[]])  # empty: the padding to its first element is still there
    assert bytes(buf) == struct.pack("<I", 0) + bytes(4)
    buf = bytearray()
    nodecmd.marshal(buf, "v", [("g", "s")])
    assert bytes(buf) == b"\x01g\0\x01s\0"


def test_bad_signatures_and_data_are_refused():
    for signature in ("a", "(s", "X", "{sv}", "z"):
        with pytest.raises(ValueError, match="not supported"):
            nodecmd.dbus_types(signature)
    with pytest.raises(ValueError, match="a key and a value"):
        nodecmd.dbus_types("a{svs}")
    with pytest.raises(ValueError):
        nodecmd.marshal(bytearray(), "ss", ["one"])
    for signature, value in (("t", 1 << 64), ("y", 256), ("i", 1 << 31), ("s", "\ud800")):
        with pytest.raises(ValueError):
            nodecmd.marshal(bytearray(), signature, [value])
    for data, signature in ((b"\x05\0\0\0ab", "s"), (b"\x01\0", "u"), (b"\x08\0\0\0\x01", "ay"),
                            (b"\x02\0\0\0ab!", "s")):  # fmt: skip
        with pytest.raises(ValueError):
            nodecmd.unmarshal(data, signature)


def test_a_message_systemd_sent_reads_and_ours_writes_the_same_bytes():
    buf = bytearray(SYSTEMD_REPLY + b"l\x04")  # the start of the next message stays
    message = nodecmd.read_message(buf)
    assert (message.kind, message.serial) == (nodecmd.METHOD_RETURN, 1)
    assert message.fields == {nodecmd.F_REPLY: 1, nodecmd.F_SENDER: "org.freedesktop.systemd1",
                              nodecmd.F_SIGNATURE: "s"}  # fmt: skip
    assert message.values() == ["graphical.target"]
    assert buf == b"l\x04" and nodecmd.read_message(buf) is None
    ours = nodecmd.dbus_message(nodecmd.METHOD_RETURN, 1, {
        nodecmd.F_REPLY: ("u", 1), nodecmd.F_SENDER: ("s", "org.freedesktop.systemd1")},
        "s", ["graphical.target"])  # fmt: skip
    # systemd flags its replies NO_REPLY_EXPECTED (byte 2); everything else is the same
    assert ours[:2] + ours[3:] == SYSTEMD_REPLY[:2] + SYSTEMD_REPLY[3:]


def test_a_message_comes_whole_or_not_at_all_and_errors_carry_their_name():
    error = nodecmd.dbus_message(nodecmd.ERROR, 9, {
        nodecmd.F_ERROR: ("s", nodecmd.JOB_FAILED), nodecmd.F_REPLY: ("u", 3)},
        "s", ["Unit meso-x.service already exists."])  # fmt: skip
    (fields,) = struct.unpack_from("<I", error, 12)
    body_at = (16 + fields + 7) // 8 * 8  # the body follows the header's padding to 8
    assert error[16 + fields : body_at] == bytes(body_at - 16 - fields)
    assert error[body_at:] == struct.pack("<I", 35) + b"Unit meso-x.service already exists.\0"
    buf = bytearray()
    for byte in error[:-1]:
        buf.append(byte)
        assert nodecmd.read_message(buf) is None
    buf.append(error[-1])
    message = nodecmd.read_message(buf)
    assert message.fields[nodecmd.F_ERROR] == nodecmd.JOB_FAILED and buf == b""
    exc = nodecmd.DBusError(message.fields[nodecmd.F_ERROR], message.values()[0])
    assert (exc.name, exc.message) == (nodecmd.JOB_FAILED, "Unit meso-x.service already exists.")
    with pytest.raises(ValueError, match="little-endian"):
        nodecmd.read_message(bytearray(b"B" + error[1:]))


# -- the argv -> properties translation ----------------------------------------------------------

USERS = {"alice": (1000, 1000), "root": (0, 0)}
FOUND = {"sh": "/usr/bin/sh", "true": "/usr/bin/true"}  # programs as systemd-run finds them
POLICY = nodecmd.parse_policy({"task_users": ["alice"], "allow_root": True,
                               "sandbox_minimum": {"protect_system": "no",
                                                   "private_tmp": False,
                                                   "no_new_privileges": False}})  # fmt: skip


def translated(request: dict, systemd: int = 252) -> dict:
    argv, _ = nodecmd.plan_launch({"unit": "meso-j_t_0_1", **request}, POLICY, USERS.get, systemd)
    unit, props = nodecmd.transient_properties(argv, FOUND.get)
    assert unit == "meso-j_t_0_1.service"
    names = [name for name, _ in props]
    assert names[0] == "Description" and names[-1] == "ExecStart"  # as systemd-run sends them
    assert not [n for n in names if names.count(n) > 1]  # each once (DeviceAllow may repeat)
    return dict(props)


def test_a_task_with_every_option_translates_to_systemds_types():
    props = translated({
        "argv": ["sh", "-c", "echo $HOME"], "env": {"B": "x $y 'q' \"ü\"", "A": "1"},
        "cwd": "/srv/data", "user": "alice", "cpus": 1500, "mem": 64 << 20, "tasks_max": 32,
        "runtime_sec": 120, "grace_sec": 7, "mem_soft": 32 << 20, "io_weight": 300,
        "description": "a task: ünï",
        "sandbox": {"protect_system": "strict", "private_tmp": True, "no_new_privileges": True},
    })  # fmt: skip
    assert props == {
        "Description": ("s", "a task: ünï"), "RemainAfterExit": ("b", True),
        "ExitType": ("s", "cgroup"), "NoNewPrivileges": ("b", True), "PrivateTmp": ("b", True),
        "ProtectSystem": ("s", "strict"), "CPUQuotaPerSecUSec": ("t", 1_500_000),
        "MemoryMax": ("t", 64 << 20), "MemorySwapMax": ("t", 0), "TasksMax": ("t", 32),
        "OOMPolicy": ("s", "stop"), "MemoryHigh": ("t", 32 << 20), "IOWeight": ("t", 300),
        "RuntimeMaxUSec": ("t", 120_000_000), "TimeoutStopUSec": ("t", 7_000_000),
        "User": ("s", "alice"), "WorkingDirectory": ("s", "/srv/data"),
        "Environment": ("as", ["A=1", "B=x $y 'q' \"ü\""]),
        # the argv as systemd-run sends it: the program found, "$" doubled (systemd expands nothing)
        "ExecStart": ("a(sasb)", [("/usr/bin/sh", ["/usr/bin/sh", "-c", "echo $$HOME"], False)]),
    }  # fmt: skip


def test_identities_restarts_and_old_systemd():
    dynamic = translated({"argv": ["true"]}, systemd=249)
    assert dynamic["DynamicUser"] == ("b", True) and "ExitType" not in dynamic
    assert "User" not in dynamic and "Environment" not in dynamic
    root = translated({"argv": ["true"], "user": "root"})
    assert root["User"] == ("s", "root") and "DynamicUser" not in root
    as_root = translated({"argv": ["true"], "sandbox": {"dynamic_user": False}})
    assert "User" not in as_root and "DynamicUser" not in as_root
    for restart in ("always", "on-failure"):
        props = translated({"argv": ["true"], "restart": restart})
        assert props["Restart"] == ("s", restart) and props["RestartUSec"] == ("t", 1_000_000)
        assert "RemainAfterExit" not in props
    for cpus, usec in ((1, 1000), (10, 10_000), (1234, 1_234_000), (10**6, 10**9)):
        assert translated({"argv": ["true"], "cpus": cpus})["CPUQuotaPerSecUSec"] == ("t", usec)


def test_pinned_cores_nodes_and_devices_translate(host):  # noqa: F811
    argv = pin({"cpuset": [2, 3], "numa": 1, "devices": {"gpu": ["/dev/loop1"]}})
    found = dict(nodecmd.transient_properties(argv, FOUND.get)[1])
    assert found["AllowedCPUs"] == ("ay", b"\x0c" + bytes(7))  # cores 2 and 3, a whole long
    assert found["AllowedMemoryNodes"] == ("ay", b"\x02" + bytes(7))
    assert found["DevicePolicy"] == ("s", "closed")
    assert found["DeviceAllow"] == ("a(ss)", [("/dev/loop1", "rw")])
    assert ("MESO_CPUSET=2-3" in found["Environment"][1]
            and "CUDA_VISIBLE_DEVICES=1" in found["Environment"][1])  # fmt: skip
    wide = nodecmd.unit_property("AllowedCPUs=0,64-65")
    assert wide == ("AllowedCPUs", ("ay", b"\x01" + bytes(7) + b"\x03" + bytes(7)))


def test_every_property_the_node_writes_is_known():
    """Every property the node command's launch code writes translates (a new one must be
    added to the translator, else every launch with it runs systemd-run)."""
    launching = (nodecmd.plan_launch, nodecmd._identity, nodecmd.pinned_limits, nodecmd.pin_argv)
    source = "".join(inspect.getsource(f) for f in launching)
    names = set(re.findall(r"--property=([A-Z][A-Za-z]+)=", source))
    assert {"CPUQuota", "AllowedCPUs", "DeviceAllow", "RuntimeMaxSec", "IOWeight"} <= names
    samples = {"CPUQuota": "50%", "AllowedCPUs": "0-1", "AllowedMemoryNodes": "0",
               "DeviceAllow": "/dev/null rw"}  # fmt: skip
    for name in names:
        value = samples.get(name, "yes" if name in nodecmd._BOOLEAN_PROPERTIES else "1")
        if name in nodecmd._STRING_PROPERTIES:
            value = "closed"
        assert nodecmd.unit_property(f"{name}={value}") is not None, name


@pytest.mark.parametrize(
    "change",
    [
        lambda a: [*a[:1], "--scope", *a[1:]],  # an option it does not know
        lambda a: [*a[:1], "--property=KillMode=mixed", *a[1:]],  # a property it does not know
        lambda a: [*a[:1], "--property=CPUQuota=abc", *a[1:]],
        lambda a: [*a[:1], "--property=CPUQuota=0%", *a[1:]],
        lambda a: [*a[:1], "--property=CPUQuota=1.234%", *a[1:]],
        lambda a: [*a[:1], "--property=MemoryMax=1G", *a[1:]],
        lambda a: [*a[:1], "--property=TasksMax=infinity", *a[1:]],
        lambda a: [*a[:1], "--property=AllowedCPUs=3-1", *a[1:]],
        lambda a: [*a[:1], "--property=RuntimeMaxSec=5min", *a[1:]],
        lambda a: [*a[:1], f"--property=RuntimeMaxSec={1 << 50}", *a[1:]],
        lambda a: [*a[:1], "--property=PrivateTmp=maybe", *a[1:]],
        lambda a: [*a[:1], "--setenv=PASSED", *a[1:]],  # a value from systemd-run's environment
        lambda a: [*a[:1], "--working-directory=/srv/../etc", *a[1:]],
        lambda a: [*a[:1], "--working-directory=relative", *a[1:]],
        lambda a: [x for x in a if not x.startswith("--description")],
        lambda a: ["systemd-run", "--unit=ssh", *a[2:]],
        lambda a: a[: a.index("--") + 1],  # no command
        lambda a: a[: a.index("--")],
        lambda a: ["/usr/bin/systemd-run", *a[1:]],
        lambda a: [*a[:-1], "no-such-program"],  # systemd-run finds no program: it says so
    ],
)
def test_anything_it_does_not_know_falls_back_to_systemd_run(change):
    argv, _ = nodecmd.plan_launch({"unit": "meso-j_t_0_1", "argv": ["true"]}, POLICY)
    assert nodecmd.transient_properties(argv, FOUND.get) is not None
    assert nodecmd.transient_properties(change(argv), FOUND.get) is None


def test_a_later_setenv_replaces_an_earlier_one_in_its_place():
    argv = ["systemd-run", "--unit=meso-j_t_0_1", "--description=d", "--setenv=A=1",
            "--setenv=B=2", "--setenv=A=3", "--", "true"]  # fmt: skip
    assert dict(nodecmd.transient_properties(argv, FOUND.get)[1])["Environment"] == (
        "as",
        ["A=3", "B=2"],
    )


def test_a_session_that_is_not_roots_never_tries_the_socket(monkeypatch):
    monkeypatch.setattr(nodecmd.os, "geteuid", lambda: 1000)
    session = nodecmd.Session(systemd_bus=True)
    assert session.systemd_bus() is None and not session.use_bus


def test_a_socket_that_is_not_there_leaves_launches_to_systemd_run(tmp_path, monkeypatch):
    monkeypatch.setattr(nodecmd, "SYSTEMD_PRIVATE", str(tmp_path / "private"))
    ran = []

    def systemd_run(argv):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(nodecmd, "_systemd_run", systemd_run)
    monkeypatch.setattr(nodecmd.os, "geteuid", lambda: 0)
    session = nodecmd.Session(systemd_bus=True)
    argv, _ = nodecmd.plan_launch({"unit": "meso-j_t_0_1", "argv": ["true"]}, POLICY)
    assert nodecmd._start_unit(argv, session) is None
    assert ran == [argv] and session.bus is None and session.use_bus


def test_programs_are_found_as_systemd_run_finds_them(tmp_path, monkeypatch):
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    plain = tmp_path / "plain"
    plain.write_text("")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"relative:{tmp_path}:{tool.parent}/")
    assert nodecmd.find_executable("tool") == str(tool)
    assert nodecmd.find_executable(str(tool)) == str(tool)
    for name in ("plain", str(plain), "bin/tool", "./tool", "missing", "bin"):
        assert nodecmd.find_executable(name) is None, name


# -- the connection: its auth, replies, the job's end, a peer that goes ------------------------
# A peer on a Unix socket speaks what systemd's private socket does, message for message, for
# what the lab cannot bring about at will (a job that ends other than "done", signals out of
# order, a peer that closes mid-call); the lab tests talk to the real one.


def peer(path, script, pings=None, together=False):
    """Serve one connection at `path`: the auth, then `script(conn, message)` for each message
    read (False: the peer closes); a Ping is answered (and counted in `pings`). Like systemd
    252, what came in the same read as the BEGIN is left unread until more data comes (with
    `together`, the peer is slow to read the BEGIN, so the first ping comes with it)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run():
        conn, _ = server.accept()
        said = b""
        while not said.endswith(b"\r\n"):
            said += conn.recv(4096)
        uid = str(os.geteuid()).encode().hex().encode()
        assert said == b"\0AUTH EXTERNAL " + uid + b"\r\n", said
        conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        if together:
            time.sleep(0.2)
        buf = bytearray()
        while not buf.startswith(b"BEGIN\r\n"):
            buf += conn.recv(4096)
        del buf[:7]
        if buf:  # what came with the BEGIN waits for more
            more = conn.recv(65536)
            buf += more
        while True:
            message = nodecmd.read_message(buf)
            if message is None:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                continue
            if message.fields.get(nodecmd.F_MEMBER) == "Ping":
                conn.sendall(reply(message))
                if pings is not None:
                    pings.append(message.serial)
                continue
            if not script(conn, message):
                break
        conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def signal(member: str, signature: str, body: list) -> bytes:
    fields = {nodecmd.F_PATH: ("o", nodecmd.SYSTEMD_PATH), nodecmd.F_MEMBER: ("s", member),
              nodecmd.F_INTERFACE: ("s", nodecmd.SYSTEMD_MANAGER)}  # fmt: skip
    return nodecmd.dbus_message(nodecmd.SIGNAL, 1, fields, signature, body)


def reply(message, signature: str = "", body: tuple = (), error: str | None = None) -> bytes:
    fields = {nodecmd.F_REPLY: ("u", message.serial)}
    if error:
        fields[nodecmd.F_ERROR] = ("s", error)
    return nodecmd.dbus_message(nodecmd.ERROR if error else nodecmd.METHOD_RETURN, 2, fields,
                                signature, body)  # fmt: skip


JOB = "/org/freedesktop/systemd1/job/42"
PROPS = [
    ("Description", ("s", "d")),
    ("ExecStart", ("a(sasb)", [("/bin/true", ["/bin/true"], False)])),
]


@pytest.mark.parametrize("result", ["done", "failed", "dependency"])
def test_a_start_waits_for_its_job_whichever_comes_first(tmp_path, result):
    seen = []

    def systemd(conn, message):
        seen.append((message.fields[nodecmd.F_MEMBER], message.values()))
        # the job's end before the reply, among other signals, as a busy systemd may send them
        conn.sendall(signal("UnitNew", "so", ["x.service", "/x"])
                     + signal("JobRemoved", "uoss", [41, JOB[:-1] + "1", "other.service", "failed"])
                     + signal("JobRemoved", "uoss", [42, JOB, "meso-j_t_0_1.service", result])
                     + reply(message, "o", (JOB,)))  # fmt: skip
        return True

    peer(tmp_path / "private", systemd)
    bus = nodecmd.SystemdBus(str(tmp_path / "private"), timeout=5)
    if result == "done":
        bus.start_unit("meso-j_t_0_1.service", PROPS)
    else:
        with pytest.raises(nodecmd.DBusError, match=f"ended with result '{result}'") as caught:
            bus.start_unit("meso-j_t_0_1.service", PROPS)
        assert caught.value.name == nodecmd.JOB_FAILED
    assert seen == [("StartTransientUnit", ["meso-j_t_0_1.service", "fail", PROPS, []])]
    bus.close()


def test_an_error_reply_carries_systemds_name_and_message_and_a_closed_peer_breaks(tmp_path):
    def systemd(conn, message):
        if message.fields[nodecmd.F_MEMBER] == "StartTransientUnit":
            conn.sendall(reply(message, "s", ("Unit meso-j_t_0_1.service already exists.",),
                               error="org.freedesktop.systemd1.UnitExists"))  # fmt: skip
            return True
        return False  # anything else: the peer goes, mid-call

    peer(tmp_path / "private", systemd)
    bus = nodecmd.SystemdBus(str(tmp_path / "private"), timeout=5)
    with pytest.raises(nodecmd.DBusError) as caught:
        bus.start_unit("meso-j_t_0_1.service", PROPS)
    assert (caught.value.name, caught.value.message) == (
        "org.freedesktop.systemd1.UnitExists",
        "Unit meso-j_t_0_1.service already exists.",
    )
    assert not bus.broken
    with pytest.raises(ConnectionError):
        bus.call("GetDefaultTarget")
    assert bus.broken
    bus.close()
