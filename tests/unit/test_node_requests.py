"""Hostile requests to the node command, in process: every line gets one JSON answer line,
ok true or a refusal naming the field; nothing raises, `serve` survives anything, nothing
reaches systemd that the node refused. systemd is faked here; tests/lab and molecule/node do
the same against real hosts."""

import io
import json
import os
import subprocess
from contextlib import contextmanager
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meso_agentless.node import nodecmd

LAUNCH = {"unit": "meso-j_t_0_1", "argv": ["sh", "-c", "echo hi"], "cpus": 100, "mem": 64 << 20}

# MESO_FUZZ=N runs N times as many examples (a longer hunt)
FUZZ = int(os.environ.get("MESO_FUZZ", "1"))


@contextmanager
def fake_host(tmp_path):
    """A systemd that runs nothing: every unit it started shows as running, with the limits it
    was given; state and policy under tmp_path."""
    launched: list[list[str]] = []

    def systemd_run(argv):
        launched.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def props(argv: list[str]) -> dict[str, str]:
        given = dict(a.removeprefix("--property=").split("=", 1) for a in argv
                     if a.startswith("--property="))  # fmt: skip
        quota = int(given["CPUQuota"].rstrip("%")) * 10
        return {"Id": argv[1].removeprefix("--unit=") + ".service", "LoadState": "loaded",
                "ActiveState": "active", "SubState": "running",
                "CPUQuotaPerSecUSec": f"{quota}ms", "MemoryMax": given["MemoryMax"],
                "TasksMax": given["TasksMax"]}  # fmt: skip

    def run(argv: list[str]) -> str:
        units = {props(a)["Id"]: props(a) for a in launched}
        if argv[:2] == ["systemctl", "list-units"]:
            return "".join(f"{u} loaded active running x\n" for u in units)
        if argv[:2] == ["systemctl", "show"]:
            shown = [units.get(u, {"Id": u, "LoadState": "not-found"}) for u in argv[5:]]
            return "\n".join("".join(f"{k}={v}\n" for k, v in p.items()) for p in shown)
        return ""

    with mock.patch.multiple(nodecmd, _run=run, _systemd_run=systemd_run,
                             STATE_DIR=str(tmp_path), LEDGER=str(tmp_path / "ledger.json"),
                             EPOCHS_DIR=str(tmp_path / "epochs"),
                             POLICY_FILE=str(tmp_path / "no-policy.json")):  # fmt: skip
        yield launched


def one_answer(line: bytes, session: nodecmd.Session) -> dict:
    reply = nodecmd.handle_line(line, session)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    wire = json.dumps(reply)
    assert "\n" not in wire
    if not reply["ok"]:
        error = reply["error"]
        assert isinstance(error, str) and "\n" not in error and len(error) < 3000
        assert not error.startswith("internal error"), error
        assert "Traceback" not in error
    return reply


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.sampled_from(nodecmd.LAUNCH_KEYS), inner,
                      max_size=4),
    max_leaves=12,
)  # fmt: skip
VERBS = st.sampled_from([*nodecmd.VERBS, "policy", "logs", "serve", "", "LAUNCH", "explode"])
FIELDS = (*nodecmd.LAUNCH_KEYS, "policy", "lines", "follow", "epoch", "epoch_state")
REQUESTS = st.one_of(
    st.fixed_dictionaries({"verb": VERBS}, optional={k: JSON for k in FIELDS}),
    st.fixed_dictionaries({"verb": JSON}),
    st.builds(lambda k, v: {"verb": "launch", **LAUNCH, k: v}, st.sampled_from(FIELDS), JSON),
    st.builds(lambda p: {"verb": "policy", "policy": p},
              st.fixed_dictionaries({}, optional={k: JSON for k in nodecmd.POLICY_KEYS})),
)  # fmt: skip


def encode(request: object) -> bytes:
    return json.dumps(request).encode() + b"\n"


@settings(max_examples=400 * FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(request=REQUESTS)
def test_any_request_gets_one_answer_and_never_an_exception(tmp_path, request):
    with fake_host(tmp_path) as launched:
        reply = one_answer(encode(request), nodecmd.Session())
    if launched:  # only a launch the node accepted reaches systemd
        assert request.get("verb") == "launch" and reply["ok"], (request, reply)
        assert any(a.startswith("--property=MemoryMax=") for a in launched[0])


@settings(max_examples=300 * FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(line=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda req, at, byte: (lambda b: b[:at] + bytes([byte]) + b[at + 1:])(encode(req)),
              REQUESTS, st.integers(0, 200), st.integers(0, 255)),
))  # fmt: skip
def test_any_bytes_get_one_answer(tmp_path, line):
    with fake_host(tmp_path) as launched:
        one_answer(line, nodecmd.Session())
    assert len(launched) <= 1


class Reader(io.BytesIO):
    """stdin that fails the test if the node reads more than one capped line at once."""

    def readline(self, size=-1):
        assert 0 < size <= nodecmd.MAX_LINE + 1, size
        return super().readline(size)


def test_serve_survives_everything_and_answers_each_line_once(tmp_path):
    lines = [
        b'{"verb": []}',  # wrong type for the verb: a TypeError that once ended serve
        b'{"verb": {"a": 1}}',
        b"[1, 2]",
        b'"launch"',
        b"\xff\xfe not utf-8",
        b'{"verb": "status", "unit": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"verb": "status", "unit": "meso-a_b_0_0\\n"}',
        b'{"verb": "launch", "unit": "meso-a_b_0_0", "argv": ["true"], "env": {"A\\n": "x"}}',
        b'{"verb": "status", "unit": "\\ud800"}',
        b'{"verb": "status", "unit": "x", "unit": "meso-a_b_0_0"}',
        b'{"verb": "launch", "cpus": NaN}',
        b'{"verb": "launch", "cpus": ' + b"9" * 5000 + b"}",
        b"x" * (64 << 20),  # 64 MB: skipped unread, refused
        b"",
        b'{"verb": "list", "extra": 1}',
        b'{"verb": "launch", "unit": "meso-a_b_0_0", "argv": ["id"], "user": "root"}',
        b'{"verb": "sample"}',
    ]
    stdin, stdout = Reader(b"\n".join(lines) + b"\n"), io.BytesIO()
    with fake_host(tmp_path) as launched:
        assert nodecmd.serve(stdin, stdout) == 0
    answers = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert len(answers) == len(lines)
    errors = [a.get("error", "") for a in answers]
    assert errors[:13] == [
        "verb: must be a string, not []",
        "verb: must be a string, not {'a': 1}",
        "request: must be a JSON object",
        "request: must be a JSON object",
        "request: not UTF-8 text (byte 0)",
        "request: nested deeper than 8 levels",
        "unit: 'meso-a_b_0_0\\n' is not a meso unit name (meso-JOB_TASK_INDEX_ATTEMPT)",
        "env: 'A\\n' is not an environment variable name (letters, digits and _, not starting "
        "with a digit, at most 256)",
        "unit: not valid Unicode text (a lone surrogate)",
        "unit: given twice",
        "request: NaN is not a JSON number",
        "request: not JSON (a number with thousands of digits)",
        "request: longer than 1048576 bytes",
    ]
    assert errors[13].startswith("request: not JSON")
    assert errors[14] == "extra: unknown field"
    assert errors[15] == "user: 'root' is root, which this host's policy does not allow"
    assert answers[-1]["ok"] is True and answers[-1]["capacity"]["cpus"] >= 1000
    assert launched == []


def test_a_connection_policy_applies_to_later_requests_only_on_that_connection(tmp_path):
    session = nodecmd.Session()
    with fake_host(tmp_path) as launched:
        tighten = {"verb": "policy", "policy": {"default_limits": {"mem": "32MiB"},
                                                "capacity": {"cpus": 0.15}}}  # fmt: skip
        policy = one_answer(encode(tighten), session)["policy"]
        assert policy["default_limits"]["mem"] == 32 << 20
        assert policy["source"] == "built-in defaults (tightened by this connection)"
        loosen = {"verb": "policy", "policy": {"allow_root": True}}
        assert one_answer(encode(loosen), session)["policy"]["allow_root"] is False
        root = {"verb": "launch", **LAUNCH, "user": "root"}
        assert "is root" in one_answer(encode(root), session)["error"]
        default = {"verb": "launch", "unit": "meso-j_t_0_2", "argv": ["true"]}
        assert one_answer(encode(default), session)["limits"]["mem"] == 32 << 20
        assert f"--property=MemoryMax={32 << 20}" in launched[-1]
        again = {**default, "unit": "meso-j_t_0_3"}  # 100m held + 100m > 150m
        assert "admission: cpus would exceed" in one_answer(encode(again), session)["error"]
        other = one_answer(encode({**again, "verb": "launch"}), nodecmd.Session())
        assert other["ok"] is True and other["limits"]["mem"] == 128 << 20


def test_admission_uses_the_hosts_capacity_not_the_requests(tmp_path):
    with fake_host(tmp_path):
        (tmp_path / "no-policy.json").write_text('{"capacity": {"cpus": 1, "mem": "1GiB"}}')
        session = nodecmd.Session()
        big = {"verb": "launch", "unit": "meso-j_t_0_1", "argv": ["true"], "cpus": 1001}
        assert (
            "admission: cpus would exceed the host's capacity (0 held + 1001 > 1000)"
            in (one_answer(encode(big), session)["error"])
        )
        claims_more = {**big, "capacity": {"cpus": 10**6, "mem": 1 << 50}}
        assert "admission: cpus" in one_answer(encode(claims_more), session)["error"]
        fits = {**big, "cpus": 600}
        assert one_answer(encode(fits), session)["ok"] is True
        lower = {**fits, "unit": "meso-j_t_0_2", "cpus": 300, "capacity": {"cpus": 800}}
        assert "(600 held + 300 > 800)" in one_answer(encode(lower), session)["error"]
        sample = one_answer(encode({"verb": "sample"}), session)
        assert sample["capacity"] == {"cpus": 1000, "mem": 1 << 30}


def test_a_broken_policy_file_launches_nothing(tmp_path):
    with fake_host(tmp_path) as launched:
        (tmp_path / "no-policy.json").write_text('{"allow_root": "sure"}')
        reply = one_answer(encode({"verb": "launch", **LAUNCH}), nodecmd.Session())
        assert reply["error"].endswith("no-policy.json: allow_root: must be true or false")
        sample = one_answer(encode({"verb": "sample"}), nodecmd.Session())
        assert sample["capacity"] == {"cpus": 0, "mem": 0} and "error" in sample["policy"]
    assert launched == []


def test_a_launch_that_fails_while_the_host_shuts_down_says_not_started(tmp_path):
    """systemd refusing a unit because the host is stopping is the host's doing, not the
    task's: the node says "not started" so the controller places it again."""
    failing = subprocess.CompletedProcess([], 1, "", "Failed to connect to bus: Connection refused")
    launch = {"verb": "launch", "unit": "meso-j_t_0_1", "argv": ["true"], "cpus": 100}
    for system, says in (("stopping", f"{nodecmd.NOT_STARTED}: the host is stopping"),
                         ("", f"{nodecmd.NOT_STARTED}: the host is offline"),
                         ("running", "systemd-run failed: Failed to connect to bus")):  # fmt: skip
        with fake_host(tmp_path):
            real_run = nodecmd._run

            def run(argv, system=system, real_run=real_run):
                return f"{system}\n" if argv[1:] == ["is-system-running"] else real_run(argv)

            with mock.patch.multiple(nodecmd, _run=run, _systemd_run=lambda argv: failing):
                error = one_answer(encode(launch), nodecmd.Session())["error"]
                assert says in error, error
                sample = one_answer(encode({"verb": "sample"}), nodecmd.Session())
                assert sample["system"] == (system or "offline")
