"""Fencing on the host: requests that change it carry their controller's epoch, and the node
command refuses any epoch lower than the highest it has seen (a deposed leader can do nothing).
systemd is faked as in test_node_requests; tests/lab/test_ha.py does it on real hosts."""

import contextlib
import json
import time
from unittest import mock

from meso_agentless.node import nodecmd
from tests.unit.test_node_requests import LAUNCH, fake_host, one_answer

STATE = "5eed0fa11ed0"  # the state's identity: each database numbers its epochs anew


def ask(verb: str, **request) -> dict:
    if "epoch" in request and "epoch_state" not in request:
        request["epoch_state"] = STATE
    return one_answer(json.dumps({"verb": verb, **request}).encode() + b"\n", nodecmd.Session())


def seen(tmp_path, state: str = STATE) -> str:
    return (tmp_path / "epochs" / state).read_text()


def test_a_lower_epoch_is_refused_and_launches_nothing(tmp_path):
    with fake_host(tmp_path) as launched:
        assert ask("launch", **LAUNCH, epoch=3)["ok"]
        assert seen(tmp_path) == "3\n"
        older = ask("launch", **{**LAUNCH, "unit": "meso-j_t_1_1"}, epoch=2)
        stop = ask("stop", unit="meso-j_t_0_1", epoch=2)
        forget = ask("forget", unit="meso-j_t_0_1", epoch=1)
        assert len(launched) == 1
    for refused in (older, stop, forget):
        assert not refused["ok"]
        assert refused["error"].startswith("epoch: ") and "older than 3" in refused["error"]
        assert "no longer the leader" in refused["error"]
    assert seen(tmp_path) == "3\n"


def test_a_higher_epoch_is_remembered_and_the_same_epoch_goes_on(tmp_path):
    with fake_host(tmp_path) as launched:
        assert ask("launch", **LAUNCH, epoch=3)["ok"]
        assert ask("launch", **{**LAUNCH, "unit": "meso-j_t_1_1"}, epoch=3)["ok"]
        assert ask("launch", **{**LAUNCH, "unit": "meso-j_t_2_1"}, epoch=7)["ok"]
        assert not ask("launch", **{**LAUNCH, "unit": "meso-j_t_3_1"}, epoch=3)["ok"]
        assert ask("stop", unit="meso-j_t_0_1", epoch=7)["ok"]
        assert len(launched) == 3
    assert seen(tmp_path) == "7\n"


def test_requests_without_an_epoch_are_not_fenced(tmp_path):
    """A single controller on SQLite sends none: it works as before, and records nothing."""
    with fake_host(tmp_path) as launched:
        assert ask("launch", **LAUNCH)["ok"]
        assert not (tmp_path / "epochs").exists()
        assert ask("launch", **{**LAUNCH, "unit": "meso-j_t_1_1"}, epoch=4)["ok"]
        assert ask("launch", **{**LAUNCH, "unit": "meso-j_t_2_1"})["ok"]  # still not fenced
        assert ask("stop", unit="meso-j_t_0_1")["ok"]
        assert len(launched) == 3


def test_reads_are_not_fenced_and_a_bad_epoch_is_one_line(tmp_path):
    with fake_host(tmp_path) as launched:
        assert ask("launch", **LAUNCH, epoch=5)["ok"]
        assert ask("status", unit="meso-j_t_0_1")["ok"]
        assert ask("list")["ok"]
        for bad in ("5", -1, True, 1.5, 1 << 63, None, [5]):
            reply = ask("launch", **{**LAUNCH, "unit": "meso-j_t_9_1"}, epoch=bad)
            assert not reply["ok"] and reply["error"].startswith("epoch: "), (bad, reply)
        assert ask("status", unit="meso-j_t_0_1", epoch=1)["error"] == "epoch: unknown field"
        for bad in (None, "", "../x", "NOT-HEX", 5):
            reply = ask("launch", **{**LAUNCH, "unit": "meso-j_t_8_1"}, epoch=9, epoch_state=bad)
            assert reply["error"].startswith("epoch_state: "), (bad, reply)
        assert len(launched) == 1
    assert seen(tmp_path) == "5\n"


def test_a_corrupt_epoch_file_counts_as_none_seen(tmp_path):
    (tmp_path / "epochs").mkdir()
    (tmp_path / "epochs" / STATE).write_text("garbage")
    with fake_host(tmp_path) as launched:
        assert ask("launch", **LAUNCH, epoch=1)["ok"]
        assert len(launched) == 1
    assert seen(tmp_path) == "1\n"


def test_each_state_has_its_own_epochs(tmp_path):
    """A new database starts at epoch 1 again: the hosts do not hold its old epochs against it,
    and a deposed controller of either state is still refused."""
    with fake_host(tmp_path) as launched:
        assert ask("launch", **LAUNCH, epoch=9)["ok"]
        other = {"epoch_state": "0dd", "unit": "meso-k_t_0_1"}
        assert ask("launch", **{**LAUNCH, **other}, epoch=1)["ok"]
        assert not ask("launch", **{**LAUNCH, "unit": "meso-j_t_1_1"}, epoch=8)["ok"]
        assert len(launched) == 2
    assert (seen(tmp_path), seen(tmp_path, "0dd")) == ("9\n", "1\n")


def test_a_request_past_its_expiry_does_nothing_and_one_before_it_goes_on(tmp_path):
    # a launch held in a cut connection and delivered after its sender gave up on it
    with fake_host(tmp_path) as launched:
        late = ask("launch", **LAUNCH, expires=time.time() - 2.5)
        stop = ask("stop", unit="meso-j_t_0_1", expires=time.time() - 0.1)
        assert launched == []
        assert ask("launch", **LAUNCH, expires=time.time() + 5)["ok"]
        assert len(launched) == 1
    for refused in (late, stop):
        assert not refused["ok"] and refused["error"].startswith("expires: this request came")
    assert "nothing done" in late["error"]


def test_a_launch_that_waited_past_its_expiry_for_the_ledger_lock_is_not_started(tmp_path):
    now, real_lock = [100.0], nodecmd.ledger_lock

    @contextlib.contextmanager
    def slow_lock():
        with real_lock():
            now[0] = 111.0  # the lock came after the deadline
            yield

    with fake_host(tmp_path) as launched, mock.patch.object(nodecmd, "ledger_lock", slow_lock):
        with mock.patch.object(nodecmd.time, "time", lambda: now[0]):
            answer = ask("launch", **LAUNCH, expires=110.0)
        assert launched == [] and answer["error"].startswith("expires: this request came 1.0 s")


def test_an_expiry_that_is_not_a_time_is_refused_naming_the_field(tmp_path):
    with fake_host(tmp_path) as launched:
        for bad in ("soon", True, [1], {"at": 1}):
            answer = ask("launch", **LAUNCH, expires=bad)
            assert answer["error"].startswith("expires: must be a Unix time"), bad
        assert launched == []
