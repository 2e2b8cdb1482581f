"""Reading units over systemd's private socket (nodecmd's bus_listing): GetAll replies systemd
252 sent on a lab host (tests/fixtures/node/getall-units.json, with `systemctl show` of the same
units) read into the same task states; which units a listing reads again; the signals that
mark a unit changed; the greeting a new connection needs; and the warm sample's kept facts."""

import base64
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meso_agentless.node import nodecmd
from tests.unit.test_node_dbus import peer, signal

FIXTURES = Path(__file__).parents[1] / "fixtures" / "node"
CAPTURED = json.loads((FIXTURES / "getall-units.json").read_text())
WANTED = frozenset(nodecmd.UNIT_PROPERTIES + nodecmd.RUN_TIMES + nodecmd.TIMER_PROPERTIES)


def as_task(unit: str, props: dict[str, str]) -> dict:
    """What an answer says of a unit with these properties (as _listed makes it)."""
    if unit.endswith(".timer"):
        return nodecmd.timer_state(props)
    if nodecmd.RUN_NAME.fullmatch(unit.removesuffix(".service")):
        return nodecmd.run_state(props)
    return {**nodecmd._state(props), **nodecmd.unit_limits(props)}


@pytest.mark.parametrize("unit", sorted(CAPTURED))
def test_a_getall_reply_reads_as_systemctl_show_of_the_same_unit(unit):
    body = base64.b64decode(CAPTURED[unit]["body"])
    props = nodecmd.read_properties(body, WANTED)
    (shown,) = nodecmd.parse_show(CAPTURED[unit]["show"])
    assert set(props) <= WANTED and props["Id"] == unit
    assert as_task(unit, props) == as_task(unit, shown)


def test_the_captured_units_are_in_every_state_a_task_ends_in():
    states = {u: as_task(u, nodecmd.read_properties(base64.b64decode(c["body"]), WANTED))
              for u, c in CAPTURED.items()}  # fmt: skip
    assert states["meso-fx_limits_0_1.service"]["millicpus"] == 1001  # exact, not 1000
    assert states["meso-fx_limits_0_1.service"]["description"] == "a task é"
    assert states["meso-fx_run_0_1-r5.service"]["start"] > 1.7e9
    assert states["meso-fx_timer_0_1.timer"]["next"] > states["meso-fx_run_0_1-r5.service"]["end"]
    assert {s["state"] for s in states.values()} >= {"finished", "failed", "killed", "running"}
    assert states["meso-fx_timeout_0_1.service"]["reason"] == "timed out"


def test_a_body_cut_short_or_not_a_dict_is_refused():
    body = base64.b64decode(CAPTURED["meso-fx_done_0_1.service"]["body"])
    for bad in (body[:100], body[: len(body) // 2], b"\xff\xff\xff\x7f" + body[4:], b""):
        with pytest.raises(ValueError):
            nodecmd.read_properties(bad, WANTED)


def test_unit_paths_are_escaped_as_systemd_escapes_them():
    assert nodecmd.unit_path("meso-fx_done_0_1.service") == (
        "/org/freedesktop/systemd1/unit/meso_2dfx_5fdone_5f0_5f1_2eservice"
    )
    assert nodecmd.unit_path("9a-é.timer").endswith("/unit/_39a_2d_c3_a9_2etimer")


def test_values_are_shown_as_systemctl_prints_them():
    top = nodecmd.UINT64_MAX
    assert nodecmd.shown("MemoryMax", "t", top) == "infinity"
    assert nodecmd.shown("MemoryMax", "t", 1 << 26) == str(1 << 26)
    assert nodecmd.shown("CPUQuotaPerSecUSec", "t", top) == "infinity"
    assert nodecmd.parse_usec(nodecmd.shown("CPUQuotaPerSecUSec", "t", 1_001_000)) == 1_001_000
    assert nodecmd.shown("ExecMainExitTimestamp", "t", 1_795_736_183_999_999) == "@1795736183"
    assert nodecmd.shown("LastTriggerUSec", "t", 0) == ""
    assert nodecmd.shown("InvocationID", "ay", b"\x01\xab") == "01ab"
    assert nodecmd.shown("RemainAfterExit", "b", True) == "yes"
    assert nodecmd.shown("NRestarts", "u", 3) == "3"


# -- which units a listing reads --------------------------------------------------------------


class Listed:
    """A bus for bus_listing: ListUnitsByPatterns answers `units` (name -> states, job), and
    every unit read is counted in `read`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed: set[str] = set()
        self.reloaded, self.broken = False, False
        self.units: dict = {}
        self.listed: dict[str, tuple[str, str, str, int]] = {}
        self.read: list[str] = []

    def call(self, member, signature="", body=(), *_args, **_kwargs):
        assert member == "ListUnitsByPatterns" and body == [[], ["meso-*"]]
        return [[(name, "", load, active, sub, "", path_of(name), job, "", "/")
                 for name, (load, active, sub, job) in self.listed.items()]]  # fmt: skip


def path_of(name: str) -> str:
    return nodecmd.unit_path(name)


@pytest.fixture
def bus(monkeypatch):
    listed = Listed()

    def bus_show(bus, path, wanted):
        bus.read.append(path)
        name = next(n for n in bus.listed if path_of(n) == path)
        load, active, sub, _ = bus.listed[name]
        return {"Id": name, "LoadState": load, "ActiveState": active, "SubState": sub}

    monkeypatch.setattr(nodecmd, "bus_show", bus_show)
    return listed


A, B, T = "meso-a_t_0_1.service", "meso-b_t_0_1.service", "meso-c_t_0_1.timer"


def test_a_unit_is_read_again_only_once_it_changed(bus):
    bus.listed = {A: ("loaded", "active", "running", 0), B: ("loaded", "active", "exited", 0),
                  T: ("loaded", "active", "waiting", 0), "meso-controller.service": (
                      "loaded", "active", "running", 0)}  # fmt: skip
    tasks, timers, _ = nodecmd.bus_listing(bus)
    assert [t["unit"] for t in tasks] == [A, B] and [t["unit"] for t in timers] == [T]
    assert sorted(bus.read) == sorted(map(path_of, (A, B, T)))
    bus.read.clear()
    assert nodecmd.bus_listing(bus) == (tasks, timers, [])  # nothing changed: nothing read
    assert bus.read == []
    bus.changed.add(path_of(A))  # a signal told of it
    nodecmd.bus_listing(bus)
    assert bus.read == [path_of(A)] and bus.changed == set()
    bus.read.clear()
    bus.listed[B] = ("loaded", "failed", "failed", 0)  # listed otherwise, no signal yet
    assert nodecmd.bus_listing(bus)[0][1]["state"] == "failed"
    assert bus.read == [path_of(B)]
    bus.read.clear()
    bus.listed[A] = ("loaded", "active", "running", 7)  # a job under way
    nodecmd.bus_listing(bus)
    nodecmd.bus_listing(bus)
    assert bus.read == [path_of(A), path_of(A)]
    bus.read.clear()
    bus.reloaded = True  # daemon-reload: every unit anew
    nodecmd.bus_listing(bus)
    assert sorted(bus.read) == sorted(map(path_of, (A, B, T))) and not bus.reloaded
    del bus.listed[B]  # unloaded: forgotten
    nodecmd.bus_listing(bus)
    assert path_of(B) not in bus.units


def test_a_unit_read_in_other_states_than_listed_is_read_again(bus, monkeypatch):
    bus.listed = {A: ("loaded", "active", "running", 0)}
    show = nodecmd.bus_show

    def ended(bus, path, wanted):  # it ended between the listing and its read
        return {**show(bus, path, wanted), "SubState": "exited"}

    monkeypatch.setattr(nodecmd, "bus_show", ended)
    nodecmd.bus_listing(bus)
    monkeypatch.setattr(nodecmd, "bus_show", show)
    bus.read.clear()
    nodecmd.bus_listing(bus)
    assert bus.read == [path_of(A)]


def test_a_listing_that_fails_over_the_bus_is_systemctls(monkeypatch):
    class Broken:
        broken = False

        def close(self):
            self.broken = True

    def fails(bus):
        raise ConnectionError("systemd closed the D-Bus connection")

    monkeypatch.setattr(nodecmd, "bus_listing", fails)
    monkeypatch.setattr(nodecmd, "_run", lambda argv: "")
    broken = Broken()
    assert nodecmd._listing(broken) == ([], [], [])
    assert broken.broken  # its session opens another


# -- signals, and the greeting -------------------------------------------------------------------


def unit_signal(path: str, member: str = "PropertiesChanged") -> bytes:
    fields = {nodecmd.F_PATH: ("o", path), nodecmd.F_MEMBER: ("s", member),
              nodecmd.F_INTERFACE: ("s", nodecmd.PROPERTIES)}  # fmt: skip
    return nodecmd.dbus_message(nodecmd.SIGNAL, 1, fields, "s", ["org.freedesktop.systemd1.Unit"])


def test_signals_mark_the_meso_units_they_tell_of(tmp_path):
    a, other = path_of(A), path_of("ssh.service")

    def systemd(conn, message):
        conn.sendall(unit_signal(a) + unit_signal(other)
                     + signal("UnitRemoved", "so", [B, path_of(B)])
                     + signal("UnitNew", "so", ["x.service", path_of("x.service")])
                     + signal("JobRemoved", "uoss", [1, "/j/1", A, "done"])
                     + signal("Reloading", "b", [True])
                     + nodecmd.dbus_message(nodecmd.METHOD_RETURN, 9, {
                         nodecmd.F_REPLY: ("u", message.serial)}))  # fmt: skip
        return True

    peer(tmp_path / "private", systemd)
    bus = nodecmd.SystemdBus(str(tmp_path / "private"), timeout=5)
    bus.call("GetDefaultTarget")
    assert bus.changed == {a, path_of(B)} and bus.reloaded
    bus.close()


def test_a_new_connection_is_pinged_until_systemd_answers(tmp_path, monkeypatch):
    """systemd 252 leaves what came in the same read as the BEGIN unread until more comes: a
    connection's first ping, sent with it, is answered only once a second one came."""
    pings: list[int] = []

    def systemd(conn, message):
        conn.sendall(nodecmd.dbus_message(nodecmd.METHOD_RETURN, 9, {
            nodecmd.F_REPLY: ("u", message.serial)}, "s", ["graphical.target"]))  # fmt: skip
        return True

    peer(tmp_path / "private", systemd, pings, together=True)
    bus = nodecmd.SystemdBus(str(tmp_path / "private"), timeout=5)
    assert bus.call("GetDefaultTarget") == ["graphical.target"]
    assert len(pings) >= 2 and bus.serial == max(pings) + 1
    bus.close()


def test_a_connection_systemd_never_answers_is_given_up(tmp_path):
    import socket

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "private"))
    server.listen(1)

    def silent():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        time.sleep(3)
        conn.close()

    threading.Thread(target=silent, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        nodecmd.SystemdBus(str(tmp_path / "private"), timeout=0.5)
    assert time.monotonic() - started < 2.5
    server.close()


# -- what a warm sample keeps ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["meminfo-nspawn.txt", "meminfo-vm.txt"])
def test_the_head_of_meminfo_reads_as_all_of_it(name):
    text = (FIXTURES / name).read_text()
    whole = nodecmd.parse_meminfo(text)
    assert nodecmd.memory_head(text) == {k: whole[k] for k in nodecmd.MEMORY_KEYS}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), JSON, max_size=5), JSON, JSON, JSON, st.booleans())
def test_an_answer_is_encoded_as_json_dumps_would(head, capacity, policy, topology, constant):
    session = nodecmd.Session()
    reply = {"ok": True, **head}
    if constant:
        for key in nodecmd.CONSTANT_PART:
            reply.pop(key, None)
        reply.update(capacity=capacity, policy=policy, topology=topology)
    for _ in range(2):  # the second from what the first kept
        assert nodecmd.encode_answer(reply, session) == json.dumps(reply).encode() + b"\n"
    if constant:
        changed = {**reply, "policy": [policy]}
        assert nodecmd.encode_answer(changed, session) == json.dumps(changed).encode() + b"\n"


def test_a_session_reads_its_boot_once(monkeypatch):
    reads = []
    monkeypatch.setattr(nodecmd, "boot_identity", lambda: reads.append(1) or "id/123")
    session = nodecmd.Session()
    assert nodecmd.kept_boot(session) == nodecmd.kept_boot(session) == "id/123"
    assert nodecmd.kept_boot(None) == "id/123"
    assert len(reads) == 2


def test_a_kept_listing_is_not_used_once_a_signal_told_of_a_change(tmp_path, monkeypatch):
    """A unit whose failed state is reset stays loaded a moment, no file changed: its signal
    tells, read without waiting (changes), and the sample asks systemd again."""
    sent = threading.Event()

    def systemd(conn, message):
        conn.sendall(nodecmd.dbus_message(nodecmd.METHOD_RETURN, 9, {
            nodecmd.F_REPLY: ("u", message.serial)}))  # fmt: skip
        conn.sendall(unit_signal(path_of(A)))  # after the reply: read by no call
        sent.set()
        return True

    peer(tmp_path / "private", systemd)
    bus = nodecmd.SystemdBus(str(tmp_path / "private"), timeout=5)
    assert not bus.changes()  # nothing told yet
    bus.call("GetDefaultTarget")
    assert sent.wait(5)
    time.sleep(0.2)  # the signal is on its way; the draining thread may or may not have read it
    assert bus.changes() and bus.changed == {path_of(A)}
    # a sample whose unit signature is unchanged asks systemd all the same
    monkeypatch.setattr(nodecmd, "cgroup2_root", lambda: "/nonexistent")
    same = ((), (), (None, None))  # no unit files, no cgroups: as unit_signature gives it
    monkeypatch.setattr(nodecmd, "unit_signature", lambda root: same)
    asked = []
    monkeypatch.setattr(
        nodecmd, "_listing_and_state", lambda b: asked.append(b) or (([], [], []), "running")
    )
    kept = {"signature": same, "listing": ([{"unit": A}], [], []), "system": "running"}
    assert nodecmd.watched_listing(kept, bus)[0] == ([], [], []) and asked == [bus]
    bus.changed.clear()
    kept.update(signature=same, listing=([{"unit": A}], [], []), system="running")
    assert nodecmd.watched_listing(kept, bus)[0] == ([{"unit": A}], [], [])  # nothing told
    bus.close()
    assert nodecmd.watched_listing(kept, bus)[0] == ([{"unit": A}], [], [])  # broken: files only
