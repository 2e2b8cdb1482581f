"""Execution plane benchmarks on lab hosts (root): sampling and launch latency.

- Sampling every host, one round: meso's node command over warm connections (and over fresh
  ones), side by side in one run with `ansible all -m setup`, `ansible all -m shell -a 'cat
  /proc/loadavg'` and fabric's ThreadingGroup on the same hosts. Goal: >= 10x faster than Ansible.
- Launch latency from request to running on a warm connection, p50 and p99, against a bare
  `systemd-run` timed on the host itself. Goal: within 2x.

Run as root: .venv/bin/python bench/execution_bench.py [--inventory PATH]  (without --inventory it
starts a 3-host lab named "bench" and takes it down afterwards)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko

from meso_agentless.core.tasks import unit_name
from meso_agentless.hosts.transport import NodeConnection
from meso_agentless.inventory import load_inventory
from meso_agentless.lab import cluster

ROUNDS = 5
LAUNCHES = 100  # --launches changes it (the tests' smoke run uses few)


def timed(fn, rounds: int = ROUNDS) -> float:
    """Median wall time of `rounds` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_sampling(inventory: str) -> None:
    nodes = load_inventory(inventory).nodes
    warm = [NodeConnection(n) for n in nodes]
    with ThreadPoolExecutor(len(nodes)) as pool:

        def meso_warm() -> None:
            list(pool.map(lambda c: c.request("sample"), warm))

        def meso_cold() -> None:
            def one(node):
                c = NodeConnection(node)
                try:
                    c.request("sample")
                finally:
                    c.close()

            list(pool.map(one, nodes))

        meso_warm()  # open the connections first: that is the steady state
        figures = {"meso sample, warm connections": timed(meso_warm)}
        figures["meso sample, new connections"] = timed(meso_cold)

    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}

    def ansible(*args: str):
        return lambda: subprocess.run(["ansible", "all", "-i", inventory, *args], env=env,
                                      capture_output=True, check=True)  # fmt: skip

    figures["ansible all -m setup"] = timed(ansible("-m", "ansible.builtin.setup"), 3)
    figures["ansible all -m shell (loadavg)"] = timed(
        ansible("-m", "ansible.builtin.shell", "-a", "cat /proc/loadavg"), 3
    )
    figures["fabric ThreadingGroup (loadavg)"] = timed(lambda: fabric_round(nodes), 3)
    base = figures["meso sample, warm connections"]
    for name, seconds in figures.items():
        print(f"sampling {len(nodes)} hosts: {name:34} {seconds * 1000:8.1f} ms  "
              f"({seconds / base:5.1f}x meso warm)")  # fmt: skip
    for c in warm:
        c.close()


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


def bench_launch(inventory: str) -> None:
    node = load_inventory(inventory).nodes[0]
    conn = NodeConnection(node)
    conn.request("list")
    latencies = []
    units = []
    for i in range(LAUNCHES):
        unit = unit_name("bench", "launch", i, int(time.time()))
        started = time.perf_counter()
        reply = conn.request("launch", unit=unit, argv=["sleep", "30"], cpus=10, mem=16 << 20,
                             capacity={"cpus": 10**6, "mem": 1 << 40})  # fmt: skip
        latencies.append(time.perf_counter() - started)
        assert reply["state"] == "running", reply
        units.append(unit)
    for unit in units:
        conn.request("stop", unit=unit)
    conn.close()
    bare = bare_systemd_run(node)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    print(f"launch on {node.name}, warm connection, {LAUNCHES} launches: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")  # fmt: skip
    print(f"bare systemd-run on {node.name} itself, {LAUNCHES} runs:        p50 "
          f"{bare[0] * 1000:.1f} ms, p99 {bare[1] * 1000:.1f} ms -> meso p50 is "
          f"{p50 / bare[0]:.2f}x bare (goal <= 2x)")  # fmt: skip


def bare_systemd_run(node) -> tuple[float, float]:
    """systemd-run timed on the host, by a loop running there (no SSH in the figure)."""
    script = (
        "import json, subprocess, time\n"
        "t = []\n"
        f"for i in range({LAUNCHES}):\n"
        "    s = time.perf_counter()\n"
        "    subprocess.run(['systemd-run', '--quiet', f'--unit=bare-bench-{i}',"
        " '--property=RemainAfterExit=yes', 'sleep', '30'], check=True)\n"
        "    t.append(time.perf_counter() - s)\n"
        f"for i in range({LAUNCHES}):\n"
        "    subprocess.run(['systemctl', 'stop', f'bare-bench-{i}'])\n"
        "t.sort()\n"
        "print(json.dumps([t[len(t) // 2], t[int(len(t) * 0.99) - 1]]))\n"
    )
    ssh = ["ssh", "-i", node.key_file, "-o", f"UserKnownHostsFile={node.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", f"{node.user}@{node.address}",
           "python3", "-"]  # fmt: skip
    done = subprocess.run(ssh, input=script, capture_output=True, text=True, check=True)
    p50, p99 = json.loads(done.stdout)
    return p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inventory", help="a running lab's inventory (default: start one)")
    parser.add_argument("--launches", type=int, default=LAUNCHES)
    args = parser.parse_args()
    globals()["LAUNCHES"] = args.launches
    inventory = args.inventory
    if inventory is None:
        cluster.up("bench", 3, "nspawn", 2, 4096, progress=lambda _m: None)
        inventory = str(cluster.LabPaths.of("bench").inventory)
    try:
        bench_sampling(inventory)
        bench_launch(inventory)
    finally:
        if args.inventory is None:
            cluster.down("bench", progress=lambda _m: None)


if __name__ == "__main__":
    main()
