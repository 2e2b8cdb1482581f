"""`meso sim`: conservation, capacity, determinism, row order, bad rows, partitions, gangs."""

import json
import random
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from meso_agentless.core.model import Framework, Host
from meso_agentless.errors import UsageError
from meso_agentless.sim import partition
from meso_agentless.sim.events import simulate
from meso_agentless.sim.generate import mesos_paper, params
from meso_agentless.sim.report import job_starts, series_work, summarize, work
from meso_agentless.sim.trace import format_trace, parse_trace

GiB = 2**30
HEADER = "submit_s,framework,job,task,count,cpus,mem,duration_s"
SMALL = f"""{HEADER},gang
0,a,a1,t,4,1,1GiB,10,
0,b,b1,t,6,1,2GiB,20.5,
3,c,c1,rank,5,1,1GiB,7,true
5,a,a2,t,2,2,1GiB,5,
6,web,w1,srv,2,1,1GiB,,
9,b,b2,t,3,0.5,512MiB,12,
"""


def cluster(n=3, cpus=4000):
    return [Host(f"h{i}", {"cpus": cpus, "mem": 8 * GiB}) for i in range(n)]


def generated(hosts=12, seed=3):
    return mesos_paper(params(seed, hosts, {"duration": "900"}))


CASES = [
    ("small", lambda: parse_trace(SMALL), lambda: cluster(4)),
    ("mesos-paper", generated, lambda: cluster(12, 4000)),
]


def expected_batch_work(rows, unplaced):
    """The trace's count x resources x duration, less the instances reported unplaced."""
    out = Counter()
    for i, r in enumerate(rows):
        if not r.is_service:
            for d, amount in r.resources.items():
                out[d] += (r.count - unplaced.get(i, 0)) * amount * r.duration_ms
    return out


@pytest.mark.parametrize("mode", ["shared", "static"])
@pytest.mark.parametrize(("name", "rows", "hosts"), CASES, ids=[c[0] for c in CASES])
def test_conservation_every_task_ran_its_duration_or_is_unplaced(name, rows, hosts, mode):
    rows, hosts = rows(), hosts()
    run = simulate(rows, hosts, mode=mode)
    assert work(run) == series_work(run)
    ran = Counter(t.row for t in run.tasks)
    assert len({(t.row, t.index) for t in run.tasks}) == len(run.tasks)
    unplaced = {row: n for row, n, _ in run.unplaced}
    batch = Counter()
    for i, r in enumerate(rows):
        assert ran[i] + unplaced.get(i, 0) == r.count, r
    for t in run.tasks:
        r = rows[t.row]
        if r.is_service:
            assert t.end_ms == run.end_ms
        else:
            assert t.end_ms - t.start_ms == r.duration_ms
            for d, amount in r.resources.items():
                batch[d] += amount * r.duration_ms
    assert batch == expected_batch_work(rows, unplaced)
    services = sum((t.end_ms - t.start_ms) * rows[t.row].resources["cpus"]
                   for t in run.tasks if rows[t.row].is_service)  # fmt: skip
    summary = summarize(run)
    assert summary["work"]["cpu_seconds"] == (batch["cpus"] + services) / 1000 / 1000


@pytest.mark.parametrize("mode", ["shared", "static"])
@pytest.mark.parametrize(("name", "rows", "hosts"), CASES, ids=[c[0] for c in CASES])
def test_no_host_is_ever_over_its_capacity(name, rows, hosts, mode):
    rows, hosts = rows(), hosts()
    run = simulate(rows, hosts, mode=mode)
    capacity = {h.name: h.capacity for h in hosts}
    changes = defaultdict(list)
    for t in run.tasks:
        changes[t.host] += [(t.start_ms, 1, t.row), (t.end_ms, -1, t.row)]
    for host, events in changes.items():
        used = Counter()
        for _, sign, row in sorted(events, key=lambda e: (e[0], e[1])):  # ends first
            for d, amount in rows[row].resources.items():
                used[d] += sign * amount
                assert used[d] <= capacity[host][d], (host, d)
    if mode == "static":
        for t in run.tasks:
            assert run.owners[t.host] == rows[t.row].framework


@pytest.mark.parametrize("mode", ["shared", "static"])
def test_same_input_same_output_whatever_the_row_order(mode):
    text = format_trace(generated(12, seed=5))
    header, *lines = text.splitlines()
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)  # rows with the same submit time now in another order
    first = simulate(parse_trace(text), cluster(12), mode=mode)
    again = simulate(parse_trace(text), cluster(12), mode=mode)
    other = simulate(parse_trace("\n".join([header, *shuffled])), cluster(12), mode=mode)
    assert summarize(first) == summarize(again) == summarize(other)
    key = [(t.start_ms, t.end_ms, t.host, first.rows[t.row].job, t.index) for t in first.tasks]
    assert key == [(t.start_ms, t.end_ms, t.host, other.rows[t.row].job, t.index)
                   for t in other.tasks]  # fmt: skip


def test_sharing_lets_a_busy_framework_use_an_idle_ones_hosts():
    rows = parse_trace(f"{HEADER}\n0,a,a1,t,7,1,1GiB,10\n0,b,b1,t,1,1,1GiB,10\n")
    shared = summarize(simulate(rows, cluster(2), mode="shared"))
    static = summarize(simulate(rows, cluster(2), mode="static"))
    assert shared["makespan_s"] == 10 and static["makespan_s"] == 20
    assert static["frameworks"]["a"]["hosts"] == 1
    assert shared["utilization"]["cpus"]["mean"] == pytest.approx(1.0)
    assert static["utilization"]["cpus"]["mean"] == pytest.approx(8 * 10 / (8 * 20))
    assert static["frameworks"]["a"]["completion_s"]["p95"] == 20


def test_a_gang_starts_all_at_once_and_a_task_too_big_is_unplaced_with_the_reason():
    rows = parse_trace(f"""{HEADER},gang
0,a,fill,t,10,1,1GiB,30,
1,b,mpi,rank,4,1,1GiB,5,true
2,c,huge,t,1,64,1GiB,5,
""")
    run = simulate(rows, cluster(3), mode="shared")
    starts = {t.start_ms for t in run.tasks if rows[t.row].job == "mpi"}
    assert starts == {30_000}  # 2 cpus free from 1 s to 30 s: never 2 ranks of 4 first
    assert [(rows[r].job, n) for r, n, _ in run.unplaced] == [("huge", 1)]
    assert run.unplaced[0][2] == 'no host fits: dimension "cpus" exhausted on 3 hosts'
    assert job_starts(run) == ["fill", "mpi"]


def test_interval_places_only_on_its_ticks():
    rows = parse_trace(f"{HEADER}\n0.3,a,a1,t,2,1,1GiB,1.1\n2.5,b,b1,t,1,1,1GiB,4\n")
    run = simulate(rows, cluster(1), mode="shared", interval_ms=1000)
    assert sorted(t.start_ms for t in run.tasks) == [1000, 1000, 3000]


def test_partition_by_weight_and_by_declared_attribute():
    assert partition.split(10, {"a": 1, "b": 1, "c": 2}) == {"a": 3, "b": 2, "c": 5}
    assert partition.split(3, {"a": 1, "b": 100}) == {"a": 1, "b": 2}
    hosts = [*cluster(4), Host("mine", {"cpus": 1000}, attributes={"partition": "c"})]
    owners = partition.assign(hosts, ["a", "b", "c"], {"a": Framework("a", weight=3)})
    assert owners == {"mine": "c", "h0": "a", "h1": "a", "h2": "a", "h3": "b"}
    with pytest.raises(UsageError, match="1 host"):
        partition.assign(cluster(1), ["a", "b"], {})


BAD = [
    ("submit_s,framework,job,task,count,cpus,mem\n", "line 1: missing column duration_s"),
    (f"{HEADER},colour\n", "line 1, column 'colour': unknown column"),
    (f"{HEADER}\n0,a,j,t,1,1,1GiB,10\n0,a,j,u,x,1,1GiB,1\n", "line 3, column count: "),
    (f"{HEADER}\n\n0,a,j,t,1,lots,1GiB,10\n", "line 3, column cpus: "),
    (f"{HEADER}\n0,a,j,t,1,1,1 GiBs,10\n", "line 2, column mem: "),
    (f"{HEADER}\n-1,a,j,t,1,1,1GiB,10\n", "line 2, column submit_s: "),
    (f"{HEADER}\n0,a,j,t,1,1,1GiB,0.0001\n", "line 2, column duration_s: .* finer"),
    (f"{HEADER}\n0,A,j,t,1,1,1GiB,1\n", "line 2, column framework: "),
    (f"{HEADER}\n0,a,j,t,1,1,1GiB\n", "line 2: 7 cells, the header has 8"),
    (f"{HEADER}\n0,a,j,t,1,1,1GiB,1\n0,b,j,u,1,1,1GiB,1\n", "line 3, column job: .*framework a"),
    (f"{HEADER}\n0,a,j,t,1,1,1GiB,1\n0,a,j,t,1,1,1GiB,1\n", "line 3, column task: .*line 2"),
    (f"{HEADER},type\n0,a,j,t,1,1,1GiB,5,service\n", "line 2, column duration_s: a service"),
    (f"{HEADER},constraints\n0,a,j,t,1,1,1GiB,5,\"[{{\"\"op\"\": \"\"near\"\"}}]\"\n",
     "line 2, column constraints: 0.op: "),
    (f"{HEADER},gang\n0,a,j,t,1,1,1GiB,5,maybe\n", "line 2, column gang: "),
    (f"{HEADER}\n0,a,j,t,1,0,0,5\n", "line 2, column cpus: a task must ask"),
    (f"{HEADER}\n", "no rows"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_traces_name_the_line_and_the_column(text, message):
    with pytest.raises(UsageError, match=message):
        parse_trace(text, "t.csv")


def test_constraints_and_ports_columns_are_read_and_kept():
    rows = parse_trace(f"""{HEADER},ports,constraints
0,a,j,t,2,1,1GiB,5,1,"[{{""op"": ""unique_host""}}]"
""")
    assert rows[0].resources["ports"] == 1 and rows[0].constraints[0].op == "unique_host"
    run = simulate(rows, [Host(f"h{i}", {"cpus": 4000, "mem": 8 * GiB}, ports=((31000, 31001),))
                          for i in range(2)])  # fmt: skip
    assert sorted(t.host for t in run.tasks) == ["h0", "h1"]
    assert parse_trace(format_trace(rows))[0].constraints == rows[0].constraints


def test_the_generator_is_deterministic_and_its_trace_reads_back():
    a, b = generated(20, seed=9), generated(20, seed=9)
    assert a == b and a != generated(20, seed=10)
    back = parse_trace(format_trace(a))
    strip = [(r.key, r.count, r.resources, r.duration_ms, r.gang) for r in a]
    assert [(r.key, r.count, r.resources, r.duration_ms, r.gang) for r in back] == strip
    assert {r.framework for r in a} == {"hadoop", "spark", "mpi", "web"}
    assert all(r.gang for r in a if r.framework == "mpi")
    with pytest.raises(UsageError, match="--param load"):
        params(1, 10, {"load": "lots"})
    with pytest.raises(UsageError, match="--param mix"):
        params(1, 10, {"mix": "1:2"})


def meso(*args, cwd):
    return subprocess.run([sys.executable, "-m", "meso_agentless", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)  # fmt: skip


INVENTORY = """all:
  vars:
    meso_frameworks: {hadoop: {weight: 1}, spark: {weight: 1}, mpi: {weight: 1}, web: {}}
  children:
    meso_nodes:
      hosts:
        node[01:12]:
          meso_resources: {cpus: 4, mem: 15GiB}
"""


def test_the_command_generates_simulates_and_plots(tmp_path):
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    done = meso("sim", "--generate", "mesos-paper", "--seed", "4", "--hosts", "12",
                "-p", "duration=600", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (tmp_path / "trace.csv").write_text(done.stdout)
    done = meso("sim", "trace.csv", "-i", "hosts.yml", "-o", "json", "--plot", "plots",
                cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert set(runs) == {"shared", "static"}
    instances = sum(r.count for r in parse_trace((tmp_path / "trace.csv").read_text()))
    for run in runs.values():  # static: some gangs are larger than their framework's hosts
        assert run["tasks"] + sum(u["instances"] for u in run["unplaced"]) == instances
    assert runs["shared"]["unplaced"] == [] and runs["static"]["unplaced"]
    assert "gang of" in runs["static"]["unplaced"][0]["reason"]
    for png in ("utilization.png", "shares.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    table = meso("sim", "trace.csv", "-i", "hosts.yml", "--partition", "shared", cwd=tmp_path)
    assert "cpus utilization mean" in table.stdout and "static" not in table.stdout


def test_the_command_refuses_a_bad_row_with_exit_2(tmp_path):
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / "bad.csv").write_text(f"{HEADER}\n0,a,j,t,1,1,1GiB,10\n0,a,k,t,1,1,1GiB,soon\n")
    done = meso("sim", "bad.csv", "-i", "hosts.yml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("meso: error: bad.csv line 3, column duration_s: 'soon' is "
                                   "not a number of seconds")  # fmt: skip
    assert done.stdout == ""
    done = meso("sim", "bad.csv", "-i", "hosts.yml", "--interval", "soon", cwd=tmp_path)
    assert done.returncode == 2 and "--interval" in done.stderr


def test_quotas_and_reservations_of_the_inventory_hold_in_the_simulation():
    rows = parse_trace(f"{HEADER}\n0,a,a1,t,8,1,1GiB,10\n5,b,b1,t,2,1,1GiB,10\n")
    reserved = {"b": {"cpus": 4000}}
    hosts = [Host("h0", {"cpus": 4000, "mem": 8 * GiB}),
             Host("h1", {"cpus": 4000, "mem": 8 * GiB}, reservations=reserved)]  # fmt: skip
    run = simulate(rows, hosts, [Framework("a", quota={"cpus": 3000})])
    a_starts = sorted(t.start_ms for t in run.tasks if rows[t.row].framework == "a")
    assert a_starts == [0] * 3 + [10_000] * 3 + [20_000] * 2  # 3 at a time: its quota
    assert {t.host for t in run.tasks if rows[t.row].framework == "a"} == {"h0"}
    b = sorted((t.host, t.start_ms) for t in run.tasks if rows[t.row].framework == "b")
    assert b == [("h0", 5000), ("h1", 5000)]  # the free cpu a's quota left on h0, then its own


def test_the_examples_read_and_a_gang_too_big_for_its_partition_says_so():
    from pathlib import Path

    from meso_agentless.sim.trace import read_trace
    from meso_agentless.spec import load_job

    root = Path(__file__).parents[2] / "examples"
    assert [g.gang for g in load_job(root / "mpi.yaml").groups()] == [True]
    rows = read_trace(str(root / "trace.csv"))
    hosts = [Host(f"h{i}", {"cpus": 2000, "mem": 4 * GiB}) for i in range(3)]
    shared, static = (simulate(rows, hosts, mode=m) for m in ("shared", "static"))
    assert shared.unplaced == []
    [(row, count, reason)] = static.unplaced
    assert (rows[row].job, count) == ("allreduce", 4)
    assert reason.startswith("gang of 4: only 2 fit at once, so none was placed")
