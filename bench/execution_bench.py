"""Execution plane benchmarks on lab hosts (root): sampling, launch latency, the CLI's start.

- Sampling every host, one round: meso's node command over warm connections, pipelined (every
  request sent before any answer is read) and with a thread per host, and over new connections,
  beside its floor (a JSON line echoed by `cat` on a warm paramiko channel, one host and all
  pipelined) and side by side with `ansible all -m setup`, `ansible all -m shell -a 'cat
  /proc/loadavg'` and fabric's ThreadingGroup on the same hosts. Goals: <= 2 ms for 3 hosts warm,
  >= 10x faster than Ansible.
- Launch latency from request to running on a warm connection, p50 and p99, in turns with bare
  `systemd-run` loops timed on the host itself: the minimal command, and the very argv meso runs
  (its sandbox and limits). Goal: p50 <= 1.2x bare. Beside them, the node's own launch() run on
  the host (no SSH) over systemd's private D-Bus socket and by systemd-run (the old path), and
  the host's CPU per launch of each (PID 1 and the launching process with its children, from
  /proc/PID/stat).
- Unloading ended units: a request per unit against one for them all (host CPU on a lab).
- `meso hosts -o json` embedded (no controller) as a whole new process, beside python starting
  and importing click: wall time, its CPU and its hosts' CPU (on a lab). Goal: <= 0.3 s.
- What a unit's sandbox costs its host: `systemd-run --wait true` with each of the properties
  meso's default policy asks for, alone and together, and with meso's very properties (but
  RemainAfterExit), in turns: PID 1's CPU and its children's (the unit's process, which sets the
  sandbox up before it execs).

Run as root: .venv/bin/python bench/execution_bench.py [--inventory PATH] [--quick]
[--only PART] [--compare CHECKOUT] [--rounds N]  (without --inventory it starts a 3-host lab
named "bench" and takes it down afterwards; --quick is the suite's smoke run: no Ansible, few
rounds; --only sampling, launch, forget, cli or sandbox runs that part alone)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts.launching import NODE_POLICY
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.hosts.sampling import sample_all
from meso_agentless.hosts.transport import NodeConnection, ask_each
from meso_agentless.inventory import load_inventory
from meso_agentless.lab import cluster
from meso_agentless.lab.paths import labs_root
from meso_agentless.lab.usage import lab_usage
from meso_agentless.node import node_command_source, nodecmd

ROUNDS = 5
LAUNCHES = 100  # --launches changes it


def timed(fn, rounds: int = ROUNDS) -> float:
    """Median wall time of `rounds` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_sampling(inventory: str, quick: bool = False) -> None:
    nodes = load_inventory(inventory).nodes
    warm = [NodeConnection(n) for n in nodes]
    rounds = 3 if quick else ROUNDS * 4
    with ThreadPoolExecutor(len(nodes)) as pool:

        def meso_threads() -> None:  # the old way: a thread per host, each waiting on its own
            list(pool.map(lambda c: c.request("sample"), warm))

        def meso_pipelined() -> None:  # every request sent before any answer is read
            for answer in ask_each([(c, "sample", {}) for c in warm]):
                assert isinstance(answer, dict), answer

        def meso_cold() -> None:
            sample_all(nodes)

        meso_pipelined()  # open the connections first: that is the steady state
        echo_one, echo_all = echo_floor(warm, rounds * 4)
        figures = {
            "floor: JSON line echoed, 1 host": echo_one,
            f"floor: JSON line echoed, {len(nodes)} pipelined": echo_all,
            "meso sample, warm, pipelined": timed(meso_pipelined, rounds * 4),
            "meso sample, warm, thread per host": timed(meso_threads, rounds * 4),
            "meso sample, new connections": timed(meso_cold, 3 if quick else ROUNDS),
        }
    if not quick:
        env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}

        def ansible(*args: str):
            return lambda: subprocess.run(["ansible", "all", "-i", inventory, *args], env=env,
                                          capture_output=True, check=True)  # fmt: skip

        figures["ansible all -m setup"] = timed(ansible("-m", "ansible.builtin.setup"), 3)
        figures["ansible all -m shell (loadavg)"] = timed(
            ansible("-m", "ansible.builtin.shell", "-a", "cat /proc/loadavg"), 3
        )
        figures["fabric ThreadingGroup (loadavg)"] = timed(lambda: fabric_round(nodes), 3)
    base = figures["meso sample, warm, pipelined"]
    for name, seconds in figures.items():
        print(f"sampling {len(nodes)} hosts: {name:36} {seconds * 1000:8.2f} ms  "
              f"({seconds / base:6.2f}x meso warm)")  # fmt: skip
    for c in warm:
        c.close()


def echo_floor(connections: list[NodeConnection], rounds: int) -> tuple[float, float]:
    """The floor of a sample round: a JSON line echoed by `cat` on a warm paramiko channel of
    each host, for one host and for all of them pipelined (medians)."""
    line = json.dumps({"verb": "sample"}).encode() + b"\n"
    channels = []
    for c in connections:
        channel = c._connected(time.monotonic() + 10).get_transport().open_session()
        channel.exec_command("cat")
        channels.append(channel)

    def echo(chans) -> None:
        for channel in chans:
            channel.sendall(line)
        for channel in chans:
            got = b""
            while not got.endswith(b"\n"):
                got += channel.recv(65536)

    echo(channels)
    one, every = timed(lambda: echo(channels[:1]), rounds), timed(lambda: echo(channels), rounds)
    for channel in channels:
        channel.close()
    return one, every


def fabric_round(nodes) -> None:
    from fabric import Connection, ThreadingGroup

    conns = []
    for node in nodes:
        conn = Connection(node.address, user=node.user,
                          connect_kwargs={"key_filename": node.key_file})  # fmt: skip
        conn.client.load_host_keys(str(node.known_hosts_path()))
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conns.append(conn)
    group = ThreadingGroup.from_connections(conns)
    group.run("cat /proc/loadavg", hide=True)
    group.close()


def bench_launch(inventory: str, launches: int) -> None:
    """meso launches on a warm connection, in turns with bare systemd-run loops on the host
    (the minimal command, and the very argv meso ran), so load falls on all alike."""
    node = load_inventory(inventory).nodes[0]
    conn = NodeConnection(node)
    facts = conn.request("sample")
    request = {"argv": ["sleep", "30"], "cpus": 10, "mem": 16 << 20,
               "capacity": {"cpus": 10**6, "mem": 1 << 40}}  # fmt: skip
    policy = nodecmd.tighten(nodecmd.parse_policy({}),
                             nodecmd.parse_policy(NODE_POLICY, partial=True))  # fmt: skip
    same, _ = nodecmd.plan_launch({**request, "unit": "meso-bare_bench_0_0"}, policy,
                                  systemd=facts["systemd"])  # fmt: skip
    same_props = [a for a in same[1 : same.index("--")] if not a.startswith("--unit=")]
    meso, bare, bare_same, units = [], [], [], []
    on_host: dict[str, list[float]] = {"dbus": [], "systemd-run": []}
    cpu = {name: [0.0, 0.0] for name in ("meso", "bare", "bare_same", *on_host)}  # PID 1, launcher
    chunk = max(1, launches // 5)
    for turn in range(0, launches, chunk):
        before = host_cpu(node)
        for i in range(turn, min(launches, turn + chunk)):
            unit = unit_name("bench", "launch", i, int(time.time()))
            started = time.perf_counter()
            reply = conn.request("launch", unit=unit, **request)
            meso.append(time.perf_counter() - started)
            assert reply["state"] == "running", reply
            units.append(unit)
        after = host_cpu(node)
        add_cpu(cpu["meso"], [after[k] - before[k] for k in ("pid1", "node")])
        count = min(launches, turn + chunk) - turn
        for name, props, times in (
            ("bare", ["--quiet", "--property=RemainAfterExit=yes"], bare),
            ("bare_same", same_props, bare_same),
        ):
            done = bare_systemd_run(node, count, props)
            times += done["times"]
            add_cpu(cpu[name], done["cpu"])
        done = node_launches(node, count, request, turn)
        for name, times in on_host.items():
            times += done[name]["times"]
            add_cpu(cpu[name], done[name]["cpu"])
    for unit in units:
        conn.request("stop", unit=unit)
    conn.close()
    p50 = statistics.median(meso)
    print(f"launch on {node.name}, warm connection, {launches} launches: p50 {p50 * 1000:.1f} ms, "
          f"p99 {percentile(meso, 99) * 1000:.1f} ms")  # fmt: skip
    for name, times in (("bare systemd-run", bare), ("systemd-run, meso's argv", bare_same),
                        ("node launch(), D-Bus", on_host["dbus"]),
                        ("node launch(), systemd-run", on_host["systemd-run"])):  # fmt: skip
        print(f"{name + ' on ' + node.name + ' itself':38} {launches} runs: p50 "
              f"{statistics.median(times) * 1000:.1f} ms, p99 {percentile(times, 99) * 1000:.1f} "
              f"ms -> meso p50 is {p50 / statistics.median(times):.2f}x")  # fmt: skip
    for name, label in (("meso", "meso launch, warm connection (D-Bus)"),
                        ("bare", "bare systemd-run"), ("bare_same", "systemd-run, meso's argv"),
                        ("dbus", "node launch(), D-Bus"),
                        ("systemd-run", "node launch(), systemd-run")):  # fmt: skip
        pid1, launcher = (ms / launches for ms in cpu[name])
        print(f"host CPU per launch, {label:36} PID 1 {pid1:5.2f} ms + launching process "
              f"{launcher:5.2f} ms = {pid1 + launcher:5.2f} ms")  # fmt: skip


SANDBOXES = {
    "none": [],
    "PrivateTmp=yes": ["--property=PrivateTmp=yes"],
    "ProtectSystem=full": ["--property=ProtectSystem=full"],
    "NoNewPrivileges=yes": ["--property=NoNewPrivileges=yes"],
    "all three": ["--property=PrivateTmp=yes", "--property=ProtectSystem=full",
                  "--property=NoNewPrivileges=yes"],
}  # fmt: skip


def bench_sandbox(inventory: str, units: int, rounds: int) -> None:
    """Host CPU per unit of `true` run by `systemd-run --wait`, by sandbox, in turns: PID 1's
    own and its children's (each unit's process, reaped by PID 1), from /proc/1/stat."""
    node = load_inventory(inventory).nodes[0]
    conn = NodeConnection(node)
    facts = conn.request("sample")
    conn.close()
    policy = nodecmd.tighten(nodecmd.parse_policy({}),
                             nodecmd.parse_policy(NODE_POLICY, partial=True))  # fmt: skip
    argv, _ = nodecmd.plan_launch({"unit": "meso-sandbox_bench_0_0", "argv": ["true"]}, policy,
                                  systemd=facts["systemd"])  # fmt: skip
    props = [a for a in argv[1 : argv.index("--")] if a.startswith("--property=")
             and a != "--property=RemainAfterExit=yes"]  # else --wait waits for a stop  # fmt: skip
    sandboxes = {**SANDBOXES, "meso's argv": props}
    script = CPU_MS + (
        "import subprocess, sys\n"
        "sandboxes, units, rounds = json.loads(sys.stdin.readline())\n"
        "spent = {name: [0.0, 0.0] for name in sandboxes}\n"
        "for _ in range(rounds):\n"
        "    for name, props in sandboxes.items():\n"
        "        own, children = cpu_ms(1), cpu_ms(1, True) - cpu_ms(1)\n"
        "        for _ in range(units):\n"
        "            subprocess.run(['systemd-run', '--wait', '--quiet', *props, 'true'],"
        " check=True)\n"
        "        spent[name][0] += cpu_ms(1) - own\n"
        "        spent[name][1] += cpu_ms(1, True) - cpu_ms(1) - children\n"
        "print(json.dumps(spent))\n"
    )
    spent = json.loads(on_host_run(node, script, [], json.dumps([sandboxes, units, rounds]) + "\n"))
    for name, (own, children) in spent.items():
        count = units * rounds
        print(f"host CPU per unit of `true` on {node.name}, sandbox {name:20} PID 1 "
              f"{own / count:5.2f} ms + the unit's process {children / count:5.2f} ms = "
              f"{(own + children) / count:5.2f} ms ({count} units)")  # fmt: skip


def add_cpu(total: list[float], ms: list[float]) -> None:
    total[0] += ms[0]
    total[1] += ms[1]


# CPU milliseconds of a process from /proc/PID/stat (utime, stime; cutime, cstime: its children)
CPU_MS = (
    "import json, os, time\n"
    "def cpu_ms(pid, children=False):\n"
    "    f = open(f'/proc/{pid}/stat').read().rpartition(')')[2].split()\n"
    "    ticks = sum(map(int, f[11:15] if children else f[11:13]))\n"
    "    return ticks * 1000 / os.sysconf('SC_CLK_TCK')\n"
)


def host_cpu(node) -> dict[str, float]:
    """PID 1's CPU ms on the host, and the warm node commands' (with their children)."""
    script = CPU_MS + (
        "node = 0.0\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        if b'nodecmd' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
        "            node += cpu_ms(p, True)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps({'pid1': cpu_ms(1), 'node': node}))\n"
    )
    return json.loads(on_host_run(node, script, []))


def node_launches(node, count: int, request: dict, turn: int) -> dict[str, dict]:
    """The node command's own launch() run `count` times on the host (no SSH) over systemd's
    private D-Bus socket and by systemd-run, in turns: times and host CPU (PID 1, the process
    itself with its children) of each."""
    script = (
        CPU_MS + "import sys\n"
        "SOURCE, request, policy, count, turn = json.loads(sys.stdin.readline())\n"
        "ns = {'__name__': 'nodecmd'}\n"
        "exec(compile(SOURCE, 'nodecmd', 'exec'), ns)\n"
        "out = {}\n"
        "for name, bus in (('dbus', True), ('systemd-run', False)):\n"
        "    session = ns['Session'](systemd_bus=bus)\n"
        "    session.layers.append(ns['parse_policy'](policy, partial=True))\n"
        "    times, units = [], []\n"
        "    pid1, me = cpu_ms(1), cpu_ms('self', True)\n"
        "    for i in range(count):\n"
        "        unit = f'meso-bench_{name[:4]}_{turn + i}_{int(time.time())}'\n"
        "        s = time.perf_counter()\n"
        "        reply = ns['launch']({**request, 'unit': unit}, session)\n"
        "        times.append(time.perf_counter() - s)\n"
        "        assert reply['state'] == 'running' and (session.bus is not None) == bus, reply\n"
        "        units.append(unit)\n"
        "    out[name] = {'times': times, 'cpu': [cpu_ms(1) - pid1, cpu_ms('self', True) - me]}\n"
        "    for unit in units:\n"
        "        ns['stop']({'unit': unit})\n"
        "print(json.dumps(out))\n"
    )
    args = [node_command_source().decode(), request, NODE_POLICY, count, turn]
    return json.loads(on_host_run(node, script, [], stdin=json.dumps(args) + "\n"))


def bench_forget(inventory: str, units: int, rounds: int) -> None:
    """Unloading ended units once their end is stored: a request per unit (a `systemctl show`,
    `stop` and `reset-failed` each) against one request for them all, in turns; the host's CPU
    too when the inventory is a lab's (its processes' CPU, `meso_agentless.lab.usage`)."""
    node = load_inventory(inventory).nodes[0]
    plane = ExecutionPlane([node], timeout=60)
    lab = lab_of(inventory)
    spent: dict[str, list[tuple[float, float]]] = {"one by one": [], "together": []}
    for turn in range(rounds):
        for mode, figures in spent.items():
            names = [unit_name("forget", f"t{turn}", i, int(time.time())) for i in range(units)]
            for unit in names:
                plane.launch(node.name, {"unit": unit, "argv": ["true"]})
            while any(plane.status(node.name, u)["state"] == "running" for u in names):
                time.sleep(0.2)
            cpu = lab_usage(lab, [node.name])[0].cpu if lab else 0.0
            started = time.perf_counter()
            if mode == "together":
                plane.forget_many(node.name, names)
            else:
                for unit in names:
                    plane.forget(node.name, unit)
            wall = time.perf_counter() - started
            cpu = (lab_usage(lab, [node.name])[0].cpu - cpu) if lab else float("nan")
            figures.append((wall / units, cpu / units))
    plane.close()
    for mode, figures in spent.items():
        wall = statistics.median(w for w, _ in figures)
        cpu = statistics.median(c for _, c in figures)
        print(f"forget {units} ended units on {node.name}, {mode:10}: {wall * 1000:5.1f} ms a "
              f"unit, host CPU {cpu * 1000:5.1f} ms a unit (median of {rounds})")  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bare_systemd_run(node, count: int, props: list[str]) -> dict:
    """systemd-run timed on the host, by a loop running there (no SSH in the figure), and the
    host's CPU for it (PID 1, the loop with its children)."""
    script = CPU_MS + (
        "import subprocess, sys\n"
        "props = json.loads(sys.argv[1])\n"
        "t = []\n"
        "pid1, me = cpu_ms(1), cpu_ms('self', True)\n"
        f"for i in range({count}):\n"
        "    s = time.perf_counter()\n"
        "    subprocess.run(['systemd-run', f'--unit=bare-bench-{i}', *props, '--', 'sleep',"
        " '30'], check=True)\n"
        "    t.append(time.perf_counter() - s)\n"
        "cpu = [cpu_ms(1) - pid1, cpu_ms('self', True) - me]\n"
        f"for i in range({count}):\n"
        "    subprocess.run(['systemctl', 'stop', f'bare-bench-{i}'])\n"
        "print(json.dumps({'times': t, 'cpu': cpu}))\n"
    )
    return json.loads(on_host_run(node, script, [json.dumps(props)]))


def on_host_run(node, script: str, args: list[str], stdin: str = "") -> str:
    """Run a Python script on the host over a new SSH connection; what it printed."""
    ssh = ["ssh", "-i", node.key_file, "-o", f"UserKnownHostsFile={node.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", f"{node.user}@{node.address}",
           "python3", "-c", shlex.quote(script), *map(shlex.quote, args)]  # fmt: skip
    return subprocess.run(ssh, input=stdin, capture_output=True, text=True, check=True).stdout


def lab_of(inventory: str) -> str | None:
    """The lab whose inventory this is, if it is a lab's."""
    return Path(inventory).parent.name if Path(inventory).parent.parent == labs_root() else None


def bench_cli(inventory: str, rounds: int, compare: str | None = None) -> None:
    """`meso hosts -o json` embedded (no controller), each a new process that samples every
    host over new connections, in turns with python starting and importing click (and with
    the same command from another checkout, `compare`, if given): wall time, the process's own
    CPU and, when the inventory is a lab's, its hosts' CPU (sshd, the node command, systemd)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESO_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    lab = lab_of(inventory)
    hosts = [node.name for node in load_inventory(inventory).nodes]

    def hosts_cpu() -> float:
        return sum(h.cpu for h in lab_usage(lab, hosts)) if lab else float("nan")

    with tempfile.TemporaryDirectory() as tmp:
        env.update(MESO_INVENTORY=inventory, MESO_STATE=f"{tmp}/state.db")
        commands = {
            "python starting and importing click": [sys.executable, "-c", "import click"],
            "meso hosts -o json, embedded, cold": [sys.executable, "-m", "meso_agentless",
                                                   "hosts", "-o", "json"],
        }  # fmt: skip
        envs = {name: env for name in commands}
        if compare:
            name = f"  the same, from {compare}"
            commands[name] = commands["meso hosts -o json, embedded, cold"]
            envs[name] = {**env, "PYTHONPATH": compare, "MESO_STATE": f"{tmp}/compared.db"}
        times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for i in range(rounds + 1):
            for name, argv in commands.items():
                remote = "meso" in name or name.startswith("  ")
                before = (resource.getrusage(resource.RUSAGE_CHILDREN), hosts_cpu())
                started = time.perf_counter()
                subprocess.run(argv, env=envs[name], stdout=subprocess.DEVNULL, check=True,
                               cwd=tmp)  # PYTHONPATH decides, not the cwd  # fmt: skip
                wall = time.perf_counter() - started
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                if remote:
                    time.sleep(0.3)  # the hosts end their sessions
                cpu = used.ru_utime + used.ru_stime - before[0].ru_utime - before[0].ru_stime
                if i:  # the first round writes the state file and the bytecode caches
                    times[name].append((wall, cpu, hosts_cpu() - before[1] if remote else 0.0))
    for name, spent in times.items():
        wall, cpu, on_hosts = (statistics.median(t[k] for t in spent) for k in range(3))
        fastest = min(t[0] for t in spent)
        print(f"{name:40} {wall * 1000:7.1f} ms (median of {rounds}, fastest "
              f"{fastest * 1000:.1f}); its CPU {cpu * 1000:5.1f} ms"
              + (f", its hosts' CPU {on_hosts * 1000:5.1f} ms" if on_hosts else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inventory", help="a running lab's inventory (default: start one)")
    parser.add_argument("--launches", type=int, default=LAUNCHES)
    parser.add_argument("--quick", action="store_true", help="a smoke run: no Ansible, few runs")
    parser.add_argument("--compare", help="another checkout whose `meso hosts` to time beside")
    parser.add_argument("--rounds", type=int, default=10, help="cold commands of each kind")
    parser.add_argument("--only", choices=["sampling", "launch", "forget", "cli", "sandbox"],
                        help="run this part only (e.g. cli: the cold `meso hosts`)")  # fmt: skip
    args = parser.parse_args()
    inventory = args.inventory
    if inventory is None:
        cluster.up("bench", 3, "nspawn", 2, 4096, progress=lambda _m: None)
        inventory = str(cluster.LabPaths.of("bench").inventory)
    try:
        parts = {
            "sampling": lambda: bench_sampling(inventory, args.quick),
            "launch": lambda: bench_launch(inventory, 10 if args.quick else args.launches),
            "forget": lambda: bench_forget(inventory, 5 if args.quick else 20,
                                           1 if args.quick else 3),
            "cli": lambda: bench_cli(inventory, 2 if args.quick else args.rounds, args.compare),
            "sandbox": lambda: bench_sandbox(inventory, 2 if args.quick else 20,
                                             1 if args.quick else 3),
        }  # fmt: skip
        for name, part in parts.items():
            if args.only in (None, name):
                part()
    finally:
        if args.inventory is None:
            cluster.down("bench", progress=lambda _m: None)


if __name__ == "__main__":
    main()
