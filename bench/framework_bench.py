"""Frameworks scheduling their own tasks over the API, on lab hosts (root).

- Offer latency: three frameworks subscribed, each keeping the cluster busy with short tasks
  (0.5 CPU, 1-3 s). For every task end, the time from its `update` reaching the framework to
  the next `offers` event reaching any framework that wants offers. Target: p99 <= 50 ms. (The
  end itself is seen at the controller's next sample of the host, within one interval, 1 s by
  default: that is detection, not this figure.)
- Launch rate: one framework accepts tiny tasks (0.01 CPU, 8 MiB) on the offers of every host
  at once, in one accept; from the accept sent to every task reported running on its stream.
  Target: >= 150 launches/s across 3 hosts.

Run as root: .venv/bin/python bench/framework_bench.py [--inventory PATH] [--tasks N]
(without --inventory it starts a 3-host lab named "fbench" and takes it down afterwards)
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from meso_agentless.hosts import ssh
from meso_agentless.inventory import load_inventory
from meso_agentless.lab import cluster
from meso_agentless.testing.controller import running_controller

TERMINAL = {"finished", "failed", "killed", "lost"}


def stream(client: httpx.Client, name: str, into: queue.Queue, stop: threading.Event) -> None:
    """Subscribe `name` and put (arrival time, framework, kind, data) on `into` until stopped."""
    with client.stream("POST", f"/v1/frameworks/{name}/subscribe", json={},
                       timeout=httpx.Timeout(30, read=None)) as answer:  # fmt: skip
        kind = None
        for line in answer.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                into.put((time.perf_counter(), name, kind, json.loads(line[6:])))
                kind = None


def events(client: httpx.Client, names: list[str]) -> Iterator[tuple[float, str, str, dict]]:
    """Every framework's events, in the order they arrive."""
    into: queue.Queue = queue.Queue()
    stop = threading.Event()
    for name in names:
        threading.Thread(target=stream, args=(client, name, into, stop), daemon=True).start()
    try:
        while True:
            yield into.get(timeout=60)
    finally:
        stop.set()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def offer_latency(client: httpx.Client, ends: int, out: Callable) -> None:
    names = ["fa", "fb", "fc"]
    pending_ends: list[float] = []  # arrival times of task ends not yet followed by an offer
    latencies: list[float] = []
    serial = 0
    for arrived, name, kind, data in events(client, names):
        if kind == "offers":
            latencies += [arrived - t for t in pending_ends]
            pending_ends = []
            if len(latencies) >= ends:
                break
            for offer in data["offers"]:
                slots = int(min(offer["resources"].get("cpus", 0) // 0.5,
                                offer["resources"].get("mem", 0) // (64 << 20)))  # fmt: skip
                tasks = []
                for _ in range(slots):
                    serial += 1
                    tasks.append({"name": f"t{serial}", "resources": {"cpus": 0.5, "mem": "64MiB"},
                                  "argv": ["sleep", f"{random.uniform(1, 3):.2f}"]})  # fmt: skip
                verb = "accept" if tasks else "decline"
                body = {"offer_ids": [offer["offer_id"]]}
                body.update({"tasks": tasks} if tasks else {"refuse_seconds": 0})
                client.post(f"/v1/frameworks/{name}/{verb}", json=body)
        elif kind == "update" and data["state"] in TERMINAL:
            pending_ends.append(arrived)
    for name in names:
        client.delete(f"/v1/frameworks/{name}")
    out(f"offer latency after a task end ({len(latencies)} ends, 3 frameworks): "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (target p99 <= 50 ms)")  # fmt: skip


def launch_rate(client: httpx.Client, count: int, out: Callable) -> None:
    held: dict[str, dict] = {}
    running = 0
    started = finished = 0.0
    for arrived, _name, kind, data in events(client, ["fl"]):
        if kind == "offers" and not started:
            for offer in data["offers"]:
                held[offer["host"]] = offer
            if len(held) < 3:
                continue
            per_host = -(-count // len(held))
            tasks = [{"name": f"l{host[-1]}-{i}", "host": host, "argv": ["sleep", "600"],
                      "resources": {"cpus": 0.01, "mem": "8MiB"}}
                     for host in sorted(held) for i in range(per_host)][:count]  # fmt: skip
            started = time.perf_counter()
            answer = client.post("/v1/frameworks/fl/accept", timeout=300,
                                 json={"offer_ids": [o["offer_id"] for o in held.values()],
                                       "tasks": tasks})  # fmt: skip
            answer.raise_for_status()
        elif kind == "update" and data["state"] == "running":
            running += 1
            if running == count:
                finished = arrived
                break
    client.delete("/v1/frameworks/fl", timeout=300)
    seconds = finished - started
    out(f"launches through the API ({count} tasks, 3 hosts, one accept): {seconds:.2f} s, "
        f"{count / seconds:.0f} launches/s (target >= 150/s)")  # fmt: skip


BARE = "for i in $(seq $0); do systemd-run -q --unit=bare-$i sleep 600; done"


def bare_rate(inventory: str, count: int, out: Callable) -> None:
    """The floor, side by side: `systemd-run` in a loop on every host at once (no SSH, no
    node command, no controller)."""
    nodes = load_inventory(inventory).nodes
    clients = [
        ssh.connect(n.address, user=n.user, port=n.port, known_hosts=n.known_hosts_path(),
                    key_file=Path(n.key_file) if n.key_file else None)
        for n in nodes
    ]  # fmt: skip
    per_host = -(-count // len(nodes))
    started = time.perf_counter()
    threads = [threading.Thread(target=ssh.run_argv, args=(c, ["sh", "-c", BARE, str(per_host)],
                                                           300)) for c in clients]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    for c in clients:
        ssh.run_argv(c, ["sh", "-c", "systemctl stop 'bare-*'"], 120)
        c.close()
    out(
        f"bare systemd-run on every host at once ({per_host * len(nodes)} units): "
        f"{seconds:.2f} s, {per_host * len(nodes) / seconds:.0f} launches/s (the floor)"
    )


def run(inventory: str, tasks: int, ends: int, out: Callable) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_controller(inventory, Path(tmp)) as ctl,
        httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=60) as client,
    ):
        offer_latency(client, ends, out)
        launch_rate(client, tasks, out)
        bare_rate(inventory, tasks, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", help="lab or site inventory (default: start a lab)")
    parser.add_argument("--tasks", type=int, default=450, help="tasks in the launch-rate run")
    parser.add_argument("--ends", type=int, default=200, help="task ends to time offers after")
    args = parser.parse_args()
    if args.inventory:
        run(args.inventory, args.tasks, args.ends, print)
        return 0
    lab = "fbench"
    cluster.up(lab, 3, "nspawn", 2, 4096, progress=lambda _m: None)
    try:
        run(str(cluster.LabPaths.of(lab).inventory), args.tasks, args.ends, print)
    finally:
        cluster.down(lab, progress=lambda _m: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
