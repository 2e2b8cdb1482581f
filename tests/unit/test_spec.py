"""Job files: a good one becomes task groups; every class of bad one is refused with
file, line and field, in one line."""

import pytest

from meso_agentless.errors import UsageError
from meso_agentless.spec import load_job, parse_duration

GOOD = """\
job: wordcount
framework: analytics
type: batch
tasks:
  - name: mapper
    count: 4
    command: ["python3", "-c", "print('hi')"]
    resources: {cpus: 0.5, mem: 256MiB, disk: 1GiB, ports: 1, gpus: 1}
    env: {KEY: value}
    constraints:
      - {attribute: rack, op: eq, value: r1}
      - {op: unique_host}
      - {op: max_per, attribute: rack, value: 2}
    restart: {policy: on-failure, attempts: 3}
    timeout: 10m
  - name: reducer
    command: "echo done | tee /tmp/x"
    strategy: spread
"""


def write(tmp_path, text, name="job.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_job_file(tmp_path):
    job = load_job(write(tmp_path, GOOD))
    mapper, reducer = job.groups()
    assert mapper.resources == {
        "cpus": 500, "mem": 256 * 2**20, "disk": 2**30, "ports": 1, "gpus": 1,
    }  # fmt: skip
    assert mapper.count == 4 and mapper.framework == "analytics"
    assert [c.op for c in mapper.constraints] == ["eq", "unique_host", "max_per"]
    assert job.tasks[0].timeout == 600
    assert job.tasks[1].argv == ["/bin/sh", "-c", "echo done | tee /tmp/x"]
    assert reducer.resources == {"cpus": 100, "mem": 128 * 2**20}  # the defaults
    assert reducer.strategy == "spread" and mapper.strategy == "binpack"


def task(extra: str) -> str:
    return f"job: x\ntasks:\n  - name: a\n    command: [ls]\n{extra}"


BAD = [
    (task("    bogus: 1\n"), "job.yaml:5: tasks[0].bogus: unknown field"),
    ("job: x\nextra: 1\ntasks:\n  - {name: a, command: [ls]}\n", "job.yaml:2: extra: unknown"),
    (task('    count: "3"\n'), "job.yaml:5: tasks[0].count: Input should be a valid integer"),
    (task("    count: -1\n"), "job.yaml:5: tasks[0].count: Input should be greater than"),
    (task("    count: 1000000\n"), "job.yaml:5: tasks[0].count: Input should be less than"),
    (task("    resources: {mem: -1GiB}\n"), "job.yaml:5: tasks[0].resources.mem: mem '-1GiB'"),
    (task("    resources: {cpus: -2}\n"), "tasks[0].resources.cpus: cpus must not be negative"),
    (task("    resources: {cpus: .nan}\n"), "tasks[0].resources.cpus: cpus must be a finite"),
    (task("    resources: {mem: .inf}\n"), "tasks[0].resources.mem: mem must be a finite"),
    (task("    resources: {mem: 99999999TiB}\n"), "resources.mem: mem '99999999TiB' is absurdly"),
    (task("    resources: {mem: 0}\n"), "tasks[0].resources.mem: mem must be more than 0"),
    (task("    resources: {gpus: 0.5}\n"), "tasks[0].resources: gpus 0.5 must be a whole"),
    (task("    timeout: 10y\n"), "job.yaml:5: tasks[0].timeout: '10y' is not a duration"),
    (task("    env: {K: 1}\n"), "job.yaml:5: tasks[0].env.K: Input should be a valid string"),
    (task("    constraints: [{op: regex, value: '('}]\n"), "not a valid regular expression"),
    (task("    constraints: [{op: max_per, value: 0}]\n"), "max_per needs a whole number"),
    (task("    restart: {policy: sometimes}\n"), "tasks[0].restart.policy: Input should be"),
    ("job: Bad_Name\ntasks:\n  - {name: a, command: [ls]}\n", "job.yaml:1: job: 'Bad_Name' is not"),
    ("job: x\ntasks:\n  - {name: a}\n", "job.yaml:3: tasks[0].command: required field"),
    ("job: x\ntasks: []\n", "job.yaml:2: tasks: List should have at least 1 item"),
    ("tasks:\n  - {name: a, command: [ls]}\n", "job.yaml:1: job: required field is missing"),
    ("job: x\ntasks:\n  - {name: a, command: []}\n", "tasks[0].command: command must not be"),
    ("job: x\ntasks:\n - {name: a, command: [ls]}\n - {name: a, command: [ls]}\n", "used twice"),
    ("job: x\njob: y\ntasks: []\n", "job.yaml:2: invalid YAML: duplicate key 'job'"),
    ("a: &a [x, x]\nb: [*a, *a]\n", "job.yaml:2: invalid YAML: aliases (*name) are not allowed"),
    ("job: [unclosed\n", "job.yaml:2: invalid YAML:"),
    ("- 1\n- 2\n", "job.yaml:1: a job file is a mapping"),
    ("", "job.yaml:1: a job file is a mapping"),
    ("job: x\ntype: weekly\ntasks:\n  - {name: a, command: [ls]}\n", "type: Input should be"),
    (
        "job: x\ntype: cron\ntasks:\n  - {name: a, command: [ls]}\n",
        "job.yaml:1: schedule: required for type: cron",
    ),
    (
        "job: x\npriority: 101\ntasks:\n  - {name: a, command: [ls]}\n",
        "job.yaml:2: priority: Input should be less than or equal to 100",
    ),
    (
        "job: x\npriority: -1\ntasks:\n  - {name: a, command: [ls]}\n",
        "job.yaml:2: priority: Input should be greater than or equal to 0",
    ),
    (
        "job: x\npriority: high\ntasks:\n  - {name: a, command: [ls]}\n",
        "job.yaml:2: priority: Input should be a valid integer",
    ),
    (
        "job: x\nmax_running: 0\ntasks:\n  - {name: a, command: [ls]}\n",
        "job.yaml:2: max_running: Input should be greater than or equal to 1",
    ),
    (task("    max_running: 0\n"), "job.yaml:5: tasks[0].max_running: Input should be greater"),
    (task("    max_running: 2.5\n"), "job.yaml:5: tasks[0].max_running: Input should be a valid"),
    (task("    revocable: maybe\n"), "job.yaml:5: tasks[0].revocable: Input should be a valid"),
]


def test_sharing_fields_become_the_groups_caps_and_priority(tmp_path):
    text = (
        "job: x\npriority: 80\nmax_running: 5\ntasks:\n"
        "  - {name: a, command: [ls], count: 9, max_running: 3, revocable: false}\n"
        "  - {name: b, command: [ls]}\n"
    )
    a, b = load_job(write(tmp_path, text)).groups()
    assert (a.priority, a.max_running, a.job_max_running, a.revocable) == (80, 3, 5, False)
    assert (b.priority, b.max_running, b.job_max_running, b.revocable) == (80, None, 5, True)
    plain = load_job(write(tmp_path, GOOD))
    dumped = plain.model_dump()
    assert "priority" not in dumped and "max_running" not in dumped
    assert "revocable" not in dumped["tasks"][0] and "max_running" not in dumped["tasks"][0]
    assert plain.groups()[0].priority == 50


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_job_files_name_file_line_and_field(tmp_path, text, message):
    with pytest.raises(UsageError) as caught:
        load_job(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path))
    assert "\n" not in str(caught.value)


def test_oversized_and_missing_files(tmp_path):
    big = write(tmp_path, "job: x\n# " + "y" * (1 << 20))
    with pytest.raises(UsageError, match="more than the 1048576 allowed"):
        load_job(big)
    with pytest.raises(UsageError, match="no such job file"):
        load_job(tmp_path / "nope.yaml")


def test_durations():
    assert [parse_duration(v) for v in (90, "90s", "10m", "2h", "1d")] == [
        90, 90, 600, 7200, 86400,
    ]  # fmt: skip
    for bad in ("0s", "31d", "1.5h", True, "soon"):
        with pytest.raises(ValueError):
            parse_duration(bad)
