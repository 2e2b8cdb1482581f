"""Scale on real hosts (issue 15): an nspawn lab of --hosts N (30), measured in one run (root).

- Time to bring the lab up: `meso lab up --hosts N`, a whole process, the image already cached
  (the bench takes its lab down first, so this is a fresh start).
- The lab's own memory per host: RSS and PSS of each host's processes (nspawn, its systemd,
  journald, sshd, ...) right after `up`, and again while a controller holds its warm connections
  (a node command process answering on each host); and the disk each host wrote over the image.
- The warm sample round over all hosts: the controller's own round (`Fleet.refresh`) on warm
  connections, median of --samples rounds. Target: <= 10 ms for 30 hosts.
- One host's CPU (its process tree) per sample and per launch of `true` on a warm connection,
  and per sample again once --launches (50) ended units wait on it to be forgotten.
- A batch job of --tasks (1,000) `true` tasks run to completion by `meso run` through a
  controller, each task sized (memory) so that they fill every host, about 34 a host: launches
  per second from the controller taking the job to the last launch recorded (target >= 150/s),
  and the whole process's wall time. Should `meso run` fail, its one line is printed and the
  job is followed to its end through the API.
- The CPU per task of that job on the hosts and in the controller (each process tree's user and
  system time, with its reaped children), less their rate while sampling an idle lab just before.
- One short command (`uname -r`) on every host, side by side, whole processes, median of
  --rounds: meso (`meso run --again` of a job with one task per host, through the controller:
  warm connections), `ansible all -m command`, fabric's ThreadingGroup, `pyinfra INVENTORY exec`.
  Every tool verifies host keys against the lab's known_hosts.

Run as root: .venv/bin/python bench/lab_scale_bench.py [--hosts 30] [--lab NAME] [--keep]
(`--quick`: 3 hosts, 20 tasks, 1 round: the suite's smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from controller_bench import side_by_side

from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.fleet import Fleet
from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.transport import NodeConnection
from meso_agentless.inventory import Node, load_inventory
from meso_agentless.lab import cluster
from meso_agentless.lab.paths import LabPaths
from meso_agentless.lab.usage import HostUsage, cpu_by_command, cpu_split, lab_usage, tree_cpu
from meso_agentless.testing.controller import ControllerProcess, running_controller

BIN = Path(sys.executable).parent
MESO = [sys.executable, "-m", "meso_agentless"]
COMMAND = ["uname", "-r"]
LAUNCHED = {"staging", "running", "finished", "failed", "killed"}  # what a launch answers
MIB = 1 << 20
IDLE = 5.0  # seconds of the controller sampling an idle lab, measured before the batch job

# fabric's ThreadingGroup as a whole process; its Connection would add unknown host keys
# (AutoAddPolicy), so it is given the lab's known_hosts and told to reject any other key
FABRIC = """\
import sys, paramiko
from fabric import Connection, ThreadingGroup
known_hosts, key, user, command, *addresses = sys.argv[1:]
connections = []
for address in addresses:
    c = Connection(address, user=user, connect_kwargs={"key_filename": key,
                   "allow_agent": False, "look_for_keys": False})
    c.client.load_host_keys(known_hosts)
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    connections.append(c)
for c, result in ThreadingGroup.from_connections(connections).run(command, hide=True).items():
    print(c.host, result.stdout.strip())
"""


def job_file(name: str, count: int, command: list[str], mem_mib: int, unique: bool) -> str:
    """A batch job of `count` small tasks (each on its own host if `unique`), as JSON."""
    task: dict = {"name": "t", "count": count, "command": command,
                  "resources": {"cpus": 0.01, "mem": f"{mem_mib}MiB"}}  # fmt: skip
    if unique:
        task["constraints"] = [{"op": "unique_host"}]
    return json.dumps({"job": name, "framework": "bench", "type": "batch", "tasks": [task]})


def pyinfra_inventory(nodes: Sequence[Node]) -> str:
    """A pyinfra inventory of the same hosts, with strict host key checking on the lab's file."""
    hosts = [(n.name, {"ssh_hostname": n.address, "ssh_port": n.port, "ssh_user": n.user,
                       "ssh_key": n.key_file, "ssh_known_hosts_file": str(n.known_hosts_path()),
                       "ssh_strict_host_key_checking": "yes"}) for n in nodes]  # fmt: skip
    return f"hosts = {hosts!r}\n"


def bring_up(lab: str, hosts: int, out: Callable[[str], None]) -> None:
    cluster.down(lab, progress=lambda _m: None)
    started = time.perf_counter()
    subprocess.run([*MESO, "lab", "up", "--lab", lab, "--hosts", str(hosts)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    out(f"lab up, {hosts} nspawn hosts (image cached), whole process: "
        f"{time.perf_counter() - started:.1f} s")  # fmt: skip


def memory(lab: str, nodes: Sequence[Node], when: str, out: Callable[[str], None]) -> None:
    usage: list[HostUsage] = lab_usage(lab, [n.name for n in nodes])
    pss, rss = [u.pss for u in usage], [u.rss for u in usage]
    disk = statistics.median(u.disk for u in usage)
    out(f"memory per host, {when}: PSS {statistics.median(pss) / MIB:.1f} MiB, RSS "
        f"{statistics.median(rss) / MIB:.1f} MiB (median of {len(usage)}; "
        f"{statistics.median(u.processes for u in usage):.0f} processes); whole lab PSS "
        f"{sum(pss) / MIB:.0f} MiB; disk per host {disk / MIB:.1f} MiB")  # fmt: skip


def sample_rounds(lab: str, nodes: Sequence[Node], rounds: int, out: Callable[[str], None]) -> None:
    """The warm round's wall time, and the CPU a round takes in this process (the sampler and
    paramiko's threads) and on the hosts (every process of every host)."""
    plane = ExecutionPlane(nodes)
    fleet = Fleet(plane, SystemClock())
    names = [node.name for node in nodes]
    try:
        fleet.refresh()  # opens the connections: the warm state is the steady state
        times = []
        cpu, on_hosts = process_cpu(), sum(u.cpu for u in lab_usage(lab, names))
        for _ in range(rounds):
            started = time.perf_counter()
            fleet.refresh()
            times.append(time.perf_counter() - started)
        cpu = (process_cpu() - cpu) / rounds
        on_hosts = (sum(u.cpu for u in lab_usage(lab, names)) - on_hosts) / rounds
        failed = [name for name, view in fleet.views().items() if view.error]
    finally:
        plane.close()
    assert not failed, f"sampling failed on {failed}"
    times.sort()
    median, p90 = statistics.median(times), times[int(len(times) * 0.9) - 1]
    out(f"warm sample round, {len(nodes)} hosts (the controller's Fleet.refresh): median "
        f"{median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms over {rounds} rounds "
        f"(target <= 10 ms for 30 hosts); CPU a round: the controller's {cpu * 1000:.1f} ms, "
        f"the hosts' {on_hosts * 1000:.1f} ms")  # fmt: skip


def process_cpu() -> float:
    """This process's CPU seconds so far (every thread)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def host_costs(lab: str, node: Node, launches: int, out: Callable[[str], None]) -> None:
    """One host's CPU (its whole process tree) per sample, per launch of `true`, and per sample
    once those units have ended and wait to be forgotten, on a warm connection."""
    conn = NodeConnection(node)

    split: dict[str, dict[str, float]] = {}

    def per_call(calls: list[Callable[[], object]], what: str = "") -> float:
        by_command = cpu_by_command(lab, node.name)
        before = lab_usage(lab, [node.name])[0].cpu
        for call in calls:
            call()
        spent = (lab_usage(lab, [node.name])[0].cpu - before) / len(calls) * 1000
        if what:
            spent_by = cpu_split(by_command, cpu_by_command(lab, node.name))
            split[what] = {k: v * 1000 / len(calls) for k, v in spent_by.items()}
        return spent

    units = [unit_name("cost", "t", i, int(time.time())) for i in range(launches)]
    sample = [lambda: conn.request("sample")] * 20
    launch = [lambda u=u: conn.request("launch", unit=u, argv=["true"], cpus=10, mem=4 * MIB,
                                       capacity={"cpus": 2000, "mem": 4096 * MIB})
              for u in units]  # fmt: skip
    try:
        conn.request("sample")
        empty, launched = per_call(sample * 10, "sample, no units"), per_call(launch, "launch")
        time.sleep(1)  # `true` has ended everywhere
        first = per_call(sample[:1], f"first sample after {launches} ends")
        full = per_call(sample, f"sample, {launches} ended units")
        forgot = per_call([lambda: conn.request("forget", units=units)], "forget")
        forgot /= launches
        split["forget"] = {k: v / launches for k, v in split["forget"].items()}
    finally:
        conn.close()
    out(f"CPU of one host ({node.name}), warm connection: sample with no units {empty:.2f} ms, "
        f"launch of `true` {launched:.1f} ms, first sample after their ends {first:.1f} ms, "
        f"sample with {launches} ended units {full:.2f} ms, forget (together) {forgot:.1f} ms "
        f"a unit")  # fmt: skip
    for what, spent in split.items():  # whose CPU it is (ms per call; forget: per unit)
        top = ", ".join(f"{name} {ms:.2f}" for name, ms in list(spent.items())[:6])
        out(f"  {what}: {top}")


class EventLog:
    """The controller's events of one job, as they come (Server-Sent Events, in a thread)."""

    def __init__(self, ctl: ControllerProcess, job: str) -> None:
        self.events: list[dict] = []
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(ctl, job), daemon=True)
        self._thread.start()
        assert self._open.wait(30), "the event stream did not open"

    def _follow(self, ctl: ControllerProcess, job: str) -> None:
        timeout = httpx.Timeout(10.0, read=3600.0)
        try:
            with httpx.stream("GET", f"{ctl.url}/v1/events", params={"job": job},
                              headers=ctl.headers, timeout=timeout) as response:  # fmt: skip
                response.raise_for_status()
                self._open.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except httpx.HTTPError:
            return  # the controller stopped (or never answered: __init__ says so)

    def submitted(self) -> float:
        """When the controller took the job (its wall clock)."""
        jobs = (e for e in self.events if e["kind"] == "job")
        return next(e["time"] for e in jobs if "submitted" in e["message"])

    def launches(self) -> dict[int, tuple[float, str]]:
        """Each task instance's first launch as the controller recorded it: (time, host)."""
        first: dict[int, tuple[float, str]] = {}
        for event in self.events:
            data = event.get("data", {})
            if event["kind"] == "task" and data.get("state") in LAUNCHED and "index" in data:
                first.setdefault(data["index"], (event["time"], data.get("host", "")))
        return first


class CpuMeter:
    """CPU seconds used by the lab's hosts and by the controller (each with its children)."""

    def __init__(self, lab: str, nodes: Sequence[Node], ctl: ControllerProcess) -> None:
        self.lab, self.hosts, self.pid = lab, [n.name for n in nodes], ctl.process.pid

    def read(self) -> tuple[float, float, float]:
        """(monotonic time, hosts' CPU, controller's CPU)"""
        hosts = sum(u.cpu for u in lab_usage(self.lab, self.hosts))
        return time.monotonic(), hosts, tree_cpu(self.pid)

    def by_command(self) -> list[dict]:
        """Each host's cpu_by_command()."""
        return [cpu_by_command(self.lab, host) for host in self.hosts]

    @staticmethod
    def split(before: list[dict], after: list[dict]) -> dict[str, float]:
        """The hosts' CPU between two by_command() readings, by command, summed over hosts."""
        total: dict[str, float] = {}
        for one, two in zip(before, after, strict=True):
            for name, seconds in cpu_split(one, two).items():
                total[name] = total.get(name, 0.0) + seconds
        return dict(sorted(total.items(), key=lambda item: -item[1]))


def batch_job(ctl: ControllerProcess, env: dict, tasks: int, cpu: CpuMeter, directory: Path,
              out) -> None:  # fmt: skip
    path = directory / "batch.json"
    per_host = -(-tasks // len(cpu.hosts))  # sized to fill the lab's 4 GiB hosts: all are used
    path.write_text(job_file("scale", tasks, ["true"], 4096 // per_host, unique=False))
    log = EventLog(ctl, "scale")
    t0, hosts0, ctl0 = cpu.read()  # what sampling every host each second costs, left out below
    time.sleep(IDLE)
    t1, hosts1, ctl1 = cpu.read()
    hosts_idle, ctl_idle = (hosts1 - hosts0) / (t1 - t0), (ctl1 - ctl0) / (t1 - t0)
    by_command = cpu.by_command()
    started = time.perf_counter()
    done = subprocess.run([*MESO, "run", str(path)], env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    how = "meso run exit 0"
    if done.returncode != 0:  # say why, then follow the job to its end through the API
        said = (done.stderr + done.stdout).strip().splitlines()
        how = (f"meso run exited {done.returncode} after {time.perf_counter() - started:.0f} s: "
               f"{said[-1] if said else ''}; followed to its end through the API")  # fmt: skip
        with httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as http:
            while http.get("/v1/jobs/scale").json()["state"] == "active":
                time.sleep(0.2)
    wall = time.perf_counter() - started
    t2, hosts2, ctl2 = cpu.read()
    split = cpu.split(by_command, cpu.by_command())
    time.sleep(0.5)  # the last events are on their way
    launches = log.launches()
    assert len(launches) == tasks, f"{len(launches)} of {tasks} launches seen"
    took = max(t for t, _ in launches.values()) - log.submitted()
    used = len({h for _, h in launches.values()})
    out(f"batch job of {tasks} tasks through meso run (controller), placed on {used} hosts: all "
        f"launched {took:.2f} s after the controller took it = {tasks / took:.0f} launches/s "
        f"(target >= 150/s); run to completion {wall:.2f} s wall ({how})")  # fmt: skip
    on_hosts = (hosts2 - hosts1 - hosts_idle * (t2 - t1)) / tasks
    in_ctl = (ctl2 - ctl1 - ctl_idle * (t2 - t1)) / tasks
    out(f"CPU per task of that job (launch, run, end), less sampling at idle: hosts "
        f"{on_hosts * 1000:.1f} ms, controller {in_ctl * 1000:.1f} ms: at most "
        f"{1 / (on_hosts + in_ctl):.0f} tasks/s per core of this machine")  # fmt: skip
    top = ", ".join(f"{name} {seconds * 1000 / tasks:.1f}" for name, seconds in
                    list(split.items())[:10])  # fmt: skip
    out(f"  the hosts' CPU per task by process, sampling included: {top}")


def each_host(env: dict, nodes, inventory: str, rounds: int, directory: Path, out) -> None:
    """One short command on every host: meso, ansible, fabric, pyinfra, in turns."""
    job = directory / "each.json"
    job.write_text(job_file("each", len(nodes), COMMAND, 4, unique=True))
    pyinfra_inv = directory / "pyinfra_inventory.py"
    pyinfra_inv.write_text(pyinfra_inventory(nodes))
    first = nodes[0]
    ansible = [str(BIN / "ansible"), "all", "-i", inventory, "-m", "ansible.builtin.command",
               "-a", " ".join(COMMAND), "--forks", str(len(nodes))]  # fmt: skip
    fabric = [sys.executable, "-c", FABRIC, str(first.known_hosts_path()), str(first.key_file),
              first.user, " ".join(COMMAND), *(n.address for n in nodes)]  # fmt: skip
    commands = {
        "meso run (controller, warm)": [*MESO, "run", "--again", str(job)],
        "ansible all -m command": ansible,
        "fabric ThreadingGroup": fabric,
        "pyinfra exec": [str(BIN / "pyinfra"), str(pyinfra_inv), "exec", "--", *COMMAND],
    }
    release = os.uname().release  # nspawn hosts share this machine's kernel
    for name, argv in commands.items():  # each once, checked: every host answered
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        said = done.stdout + done.stderr
        if not name.startswith("meso"):  # meso's exit 0: every host's task finished
            assert said.count(release) >= len(nodes), f"{name}: {said[-500:]}"
    medians = side_by_side(list(commands.values()), env, rounds)
    for name, seconds in zip(commands, medians, strict=True):
        out(f"`{' '.join(COMMAND)}` on {len(nodes)} hosts: {name:28} {seconds * 1000:8.1f} ms "
            f"({seconds / medians[0]:5.2f}x meso; median of {rounds})")  # fmt: skip


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    bring_up(args.lab, args.hosts, out)
    inventory = str(LabPaths.of(args.lab).inventory)
    nodes = load_inventory(inventory).nodes
    memory(args.lab, nodes, "idle lab", out)
    sample_rounds(args.lab, nodes, args.samples, out)
    host_costs(args.lab, nodes[0], args.launches, out)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MESO_", "ANSIBLE_"))}
    base |= {"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}
    extra = [] if args.watch else ["--no-watch"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_controller(inventory, Path(tmp), *extra) as ctl,
    ):
        env = {**base, **ctl.env}  # the CLI is the controller's client; the others ignore it
        batch_job(ctl, env, args.tasks, CpuMeter(args.lab, nodes, ctl), Path(tmp), out)
        memory(args.lab, nodes, "controller connected", out)
        each_host(env, nodes, inventory, args.rounds, Path(tmp), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=30)
    parser.add_argument("--lab", default=os.environ.get("MESO_BENCH_LAB", "scale"))
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="side-by-side runs of each tool")
    parser.add_argument("--samples", type=int, default=50, help="warm sample rounds")
    parser.add_argument("--launches", type=int, default=50, help="for one host's CPU per launch")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--no-watch", dest="watch", action="store_false",
                        help="the controller without watches")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="3 hosts, 20 tasks, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.tasks, args.rounds, args.samples, args.launches = 3, 20, 1, 3, 10

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        run(args, out)
    finally:
        if not args.keep:
            cluster.down(args.lab, progress=lambda _m: None)


if __name__ == "__main__":
    main()
