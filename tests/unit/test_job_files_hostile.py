"""Job files written to break the CLI: every one is refused with one line naming the file, the
line and the rule (exit 2 from `meso run`), fast, and nothing is stored; job_from_text and
job_from_data (the HTTP API's) say the same. A fuzz test over generated files closes it."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meso_agentless.errors import UsageError
from meso_agentless.spec import Job, job_from_data, job_from_text, load_job

HEAD = "job: x\ntasks:\n  - name: a\n    command: [ls]\n"  # the task's fields go on line 5

# MESO_FUZZ=N runs N times as many examples (a longer hunt)
FUZZ = int(os.environ.get("MESO_FUZZ", "1"))


def task(extra: str) -> str:
    return HEAD + extra


def refusal(text: str | bytes, name: str = "job.yaml") -> str:
    with pytest.raises(UsageError) as caught:
        job_from_text(text, name)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


HOSTILE = [
    # YAML tags with values they cannot make, and tags that are not plain data
    (task("    count: !!int abc\n"), "job.yaml:5: invalid YAML: 'abc' is not a valid int"),
    (task("    count: !!float\n"), "job.yaml:5: invalid YAML: '' is not a valid float"),
    (task("    count: !!bool maybe\n"), "job.yaml:5: invalid YAML: 'maybe' is not a valid bool"),
    (task("    timeout: !!timestamp 2023-02-30\n"), "job.yaml:5: invalid YAML: tag '!!timestamp'"),
    (task("    timeout: 2023-02-30\n"), "job.yaml:5: tasks[0].timeout: '2023-02-30' is not a"),
    (task("    count: !!binary aGk=\n"), "job.yaml:5: invalid YAML: tag '!!binary' is not"),
    (task("    env: !!set {A: B}\n"), "job.yaml:5: invalid YAML: tag '!!set' is not allowed"),
    (task("    env: !!python/object/apply:os.system [id]\n"), "tag '!!python/object/apply:"),
    # numbers too large for Python or for decimal arithmetic
    (task(f"    count: {'9' * 5000}\n"), "job.yaml:5: invalid YAML: a number with 5000 digits"),
    (task(f"    count: {'9' * 4000}\n"), "job.yaml:5: tasks[0].count: Input should be less than"),
    (task("    resources: {cpus: '1e999999'}\n"),
     "job.yaml:5: tasks[0].resources.cpus: cpus '1e999999' is absurdly large"),
    (task("    resources: {gpus: '1e999999'}\n"), "tasks[0].resources: gpus '1e999999' is absurd"),
    (task("    resources: {cpus: 1.0e+999999}\n"), "tasks[0].resources.cpus: cpus must be a fin"),
    # keys that are not plain values, nesting past any use
    ("? [a]\n: 1\njob: x\n", "job.yaml:1: invalid YAML: keys must be plain values"),
    ("? {a: 1}\n: 1\n", "job.yaml:1: invalid YAML: keys must be plain values"),
    ("job: x\ntasks: " + "[" * 20000 + "]" * 20000 + "\n", "job.yaml:2: invalid YAML: "),
    ("job: x\ntasks:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), "nested deeper"),
    ("job: x\nz: " + "{a: " * 5000 + "}" * 5000 + "\n", "job.yaml:2: invalid YAML: "),
    # regular expressions that do not compile, or are too big to
    (task("    constraints: [{op: regex, value: 'a{4294967296}'}]\n"),
     "tasks[0].constraints[0]: value is not a valid regular expression: the repetition"),
    (task(f"    constraints: [{{op: regex, value: '{'(' * 300 + ')' * 300}'}}]\n"),
     "tasks[0].constraints[0]: a regular expression of at most 256 characters"),
    (task(f"    constraints: [{{op: regex, value: '{'(?:' * 60 + 'a' + ')' * 60}'}}]\n"),
     None),  # 60 levels of groups compile: accepted
    # NUL and control characters: one line, with the line they are on
    (task("    env: {A: x}\x00\n"), "job.yaml:5: a control character (U+0000) is not allowed"),
    (task("    env: {A: \x1b[31mred}\n"), "job.yaml:5: a control character (U+001B)"),
    (HEAD.encode() + b"    env: {A: \xff\xfe}\n", "job.yaml:5: not UTF-8 text (byte 0xff)"),
    (task('    env: {A: "x\\0y"}\n'), "job.yaml:5: tasks[0].env.A: must not contain NUL"),
    (task('    command: ["a\\0b"]\n').replace("    command: [ls]\n", ""),
     "tasks[0].command[0]: must not contain NUL"),
    (task('    env: {A: "\\ud800"}\n'), "job.yaml:5: invalid YAML: "),
    # what a host would refuse: env names and values, argument and command line sizes
    (task("    env: {A=B: x}\n"), "job.yaml:5: tasks[0].env: 'A=B' is not an environment "
     "variable name (letters, digits and _, not starting with a digit"),
    (task('    env: {"A\\n": x}\n'), "tasks[0].env: 'A\\n' is not an environment variable"),
    (task(f"    env: {{BIG: {'x' * 200_000}}}\n"),
     "job.yaml:5: tasks[0].env.BIG: is 200000 bytes, more than the 131058 a host takes"),
    (task("    env:\n" + "".join(f"      V{i}: {'x' * 120_000}\n" for i in range(5))),
     "job.yaml:6: tasks[0].env: command and env take 600068 bytes on one command line, "
     "more than the 507904 a host takes"),
    (task("    command: ['" + "y" * 140_000 + "']\n").replace("    command: [ls]\n", ""),
     "job.yaml:4: tasks[0].command[0]: is 140000 bytes, more than the 131071 a host takes"),
    (task("    command: ['" + "$" * 70_000 + "']\n").replace("    command: [ls]\n", ""),
     "tasks[0].command[0]: is 140000 bytes"),  # each $ is $$ on systemd's command line
    # messages that name the rule that was broken
    (task("    workdir: relative\n"),
     "job.yaml:5: tasks[0].workdir: 'relative' must be an absolute path (starting with /)"),
    (task("    workdir: /srv/../etc\n"), "tasks[0].workdir: must not contain .."),
    (task("    workdir: \"/srv\\n\"\n"), "tasks[0].workdir: must not contain control characters"),
    (task("    user: \"root\\n\"\n"), "tasks[0].user: 'root\\n' is not a user name"),
    ("job: Bad_Name\ntasks:\n  - {name: a, command: [ls]}\n",
     "job.yaml:1: job: 'Bad_Name' is not a name: use lowercase"),
    # documents that are not one mapping
    ("job: x\n---\njob: y\n", "job.yaml:2: invalid YAML: more than one document"),
    ("just text\n", "job.yaml:1: a job file is a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_hostile_job_text_is_one_line_naming_the_rule_fast(text, message):
    started = time.perf_counter()
    if message is None:
        assert isinstance(job_from_text(text, "job.yaml"), Job)
    else:
        got = refusal(text)
        assert got.startswith(message) if message.startswith("job.yaml") else message in got, got
    # a bound against blow-ups (alias bombs, catastrophic patterns), not a speed target: a
    # loaded CI machine takes far longer than usual for a line of YAML, yet far under this
    assert time.perf_counter() - started < 5.0


def test_the_same_checks_for_json_and_parsed_data():
    good = {"job": "x", "tasks": [{"name": "a", "command": ["ls"], "env": {"A": "1"}}]}
    assert job_from_data(good).tasks[0].env == {"A": "1"}
    text = json.dumps(good, indent=2)
    assert job_from_text(text).tasks[0].env == {"A": "1"}
    bad = {**good, "tasks": [{**good["tasks"][0], "resources": {"cpus": "1e999999"}}]}
    assert_refused(lambda: job_from_data(bad), "tasks[0].resources.cpus: cpus '1e999999' is")
    assert_refused(lambda: job_from_text(json.dumps(bad, indent=1)),
                   "line 13: tasks[0].resources.cpus: cpus '1e999999' is")  # fmt: skip
    assert_refused(lambda: job_from_text(json.dumps(bad), "api"), "api:1: tasks[0].resources")
    surrogate = {**good, "tasks": [{**good["tasks"][0], "env": {"A": "\ud800"}}]}
    assert_refused(
        lambda: job_from_data(surrogate),
        "tasks[0].env.A: is not valid Unicode text (it holds a lone surrogate)",
    )
    assert_refused(lambda: job_from_text(json.dumps(surrogate)),  # JSON's "\ud800" escape
                   "tasks[0].env.A: is not valid Unicode text")  # fmt: skip
    assert_refused(lambda: job_from_text('{"job": "x", "job": "y"}'),
                   "line 1: invalid YAML: duplicate key 'job'")  # fmt: skip
    assert_refused(lambda: job_from_data([good]), "a job is a mapping")
    assert_refused(lambda: job_from_data({**good, 1: 2}), "(top level): keys must be strings")
    deep: object = "x"
    for _ in range(500):
        deep = [deep]
    assert_refused(lambda: job_from_data({**good, "z": deep}), "z[0][0]")
    assert_refused(lambda: job_from_data({**good, "job": "x\0"}), "job: must not contain NUL")
    assert_refused(lambda: job_from_text(b"\xff"), "line 1: not UTF-8 text (byte 0xff)")
    assert_refused(lambda: job_from_text("job: x\n" + "#" * (1 << 20)), "1048583 characters")


def assert_refused(call, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        call()
    assert message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_what_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    for path in (fifo, link, "/dev/zero", "/dev/urandom", tmp_path):
        result: list[str] = []
        reader = threading.Thread(target=lambda p=path, r=result: r.append(refused_file(p)))
        reader.start()
        reader.join(timeout=2)
        assert result, f"{path}: still reading"
        assert result[0] == f"{path}: job file is not a regular file"
    big = tmp_path / "big.yaml"
    big.write_bytes(b"job: x\n#" + b"y" * (1 << 20))
    assert refused_file(big) == f"{big}: job file is 1048584 bytes, more than the 1048576 allowed"
    status = tmp_path / "proc.yaml"  # a file that says it is empty and is not
    status.symlink_to("/proc/self/status")
    assert refused_file(status).startswith(f"{status}:")


def refused_file(path) -> str:
    with pytest.raises(UsageError) as caught:
        load_job(path)
    return str(caught.value)


def test_meso_run_exits_2_with_one_line_and_stores_nothing(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    cases = {
        "tag.yaml": task("    count: !!int abc\n"),
        "nul.yaml": task("    env: {A: x}\x00\n"),
        "deep.yaml": "job: x\ntasks: " + "[" * 50000 + "\n",
        "cpus.yaml": task("    resources: {cpus: '1e999999'}\n"),
        "env.yaml": task(f"    env: {{BIG: {'x' * 300_000}}}\n"),
    }
    paths = [str(fifo), "/dev/zero"]
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    env = {**os.environ, "MESO_STATE": str(tmp_path / "state.db"),
           "MESO_INVENTORY": str(tmp_path / "no-inventory")}  # fmt: skip
    for path in paths:
        done = subprocess.run([sys.executable, "-m", "meso_agentless", "run", path], env=env,
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 2, (path, done.stderr)
        assert done.stderr.startswith(f"meso: error: {path}"), done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "state.db").exists()


# -- fuzzing: generated and mutated job files, in process -----------------------------------------

GOOD = """\
job: wordcount
framework: analytics
tasks:
  - name: mapper
    count: 4
    command: ["python3", "-c", "print('hi')"]
    resources: {cpus: 0.5, mem: 256MiB, disk: 1GiB, ports: 1}
    env: {KEY: value}
    constraints: [{attribute: rack, op: regex, value: "r[0-9]+"}, {op: unique_host}]
    restart: {policy: on-failure, attempts: 3}
    timeout: 10m
    workdir: /srv
    sandbox: {protect_system: strict}
"""
PIECES = ["!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "? ", "&a ", "*a", "[",
          "]", "{", "}", "\x00", "\x1b", "\t", "'", '"', "\\", "\\0", "\\ud800", "1e999999",
          "9" * 5000, "- ", ": ", "\n", "#", "---\n", "%YAML 1.1\n", "\ufeff", "\udcff",
          "((((", "a{99999999999}", "$", "=", "..", "2023-02-30", ".nan", "~", "<<: "]  # fmt: skip


def one_line_or_job(text: str | bytes) -> None:
    try:
        result = job_from_text(text, "fuzz.yaml")
    except UsageError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml") and "\n" not in message, message
        assert "Traceback" not in message and "internal" not in message
    else:
        assert isinstance(result, Job)


@settings(max_examples=300 * FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.tuples(st.integers(0, len(GOOD)), st.integers(0, 40),
                               st.sampled_from(PIECES) | st.text(max_size=8)),
                     min_size=1, max_size=4))  # fmt: skip
def test_mutated_job_files_are_a_job_or_one_line(cuts):
    text = GOOD
    for at, drop, piece in cuts:
        text = text[:at] + piece + text[at + drop :]
    one_line_or_job(text)


@settings(max_examples=200 * FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_any_bytes_are_a_job_or_one_line(data):
    one_line_or_job(GOOD.encode()[: len(data) % 300] + data)


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10,
)  # fmt: skip
TASK_KEYS = ["name", "count", "command", "resources", "env", "constraints", "strategy",
             "restart", "timeout", "user", "workdir", "sandbox"]  # fmt: skip


@settings(max_examples=300 * FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(TASK_KEYS), value=VALUES,
       sub=st.sampled_from(["cpus", "mem", "gpus", "op", "value", "policy", "A", "x"]))  # fmt: skip
def test_generated_job_data_is_a_job_or_one_line(key, value, sub):
    base = {"name": "a", "command": ["ls"]}
    for candidate in ({**base, key: value}, {**base, key: {sub: value}},
                      {**base, key: [{"op": "regex", sub: value}]}):  # fmt: skip
        data = {"job": "x", "tasks": [candidate]}
        try:
            job_from_data(data)
        except UsageError as exc:
            assert "\n" not in str(exc) and "internal" not in str(exc)
        one_line_or_job(json.dumps(data, allow_nan=True))
