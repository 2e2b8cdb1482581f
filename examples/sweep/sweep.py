#!/usr/bin/env python3
"""A parameter sweep as a meso framework: its own scheduler, over the controller's HTTP API.

Each work item p of 0..N-1 is one task that computes p*p (after sleeping a while, as real work
would take time) and prints `result=...`. The sweep subscribes, launches items on the offers it
is sent (as many as each offer holds), declines what it cannot use, retries items whose task
failed, was killed or lost, collects each result from the task's log, and tears down when every
item is done, writing the results as JSON.

It keeps a small state file (its sweep id): killed and started again with the same file, it
subscribes again within its failover timeout, asks the controller for the state of every item
(reconcile) and goes on, launching nothing twice.

It imports nothing from meso_agentless: only httpx, and Server-Sent Events parsed by hand.

    python3 examples/sweep/sweep.py --controller http://127.0.0.1:4646 --token-file TOKEN \\
        --items 40 --out results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx

log = logging.getLogger("sweep")
DONE, PENDING, LAUNCHED = "done", "pending", "launched"
ENDED_BADLY = {"failed", "killed", "lost", "gone", "unknown"}  # then it is tried again
MiB = 1 << 20


class Api:
    """The scheduler API of one framework: POST calls, and the event stream."""

    def __init__(self, controller: str, token: str, framework: str) -> None:
        self.base = f"{controller.rstrip('/')}/v1/frameworks/{framework}"
        self.root = controller.rstrip("/")
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def call(self, verb: str, body: dict | None = None) -> httpx.Response | None:
        """The answer; None when the controller could not be reached (it may have acted: the
        next subscription's reconcile says)."""
        try:
            return self.http.post(f"{self.base}/{verb}", json=body)
        except httpx.HTTPError as exc:
            log.warning("%s: %s", verb, exc)
            return None

    def teardown(self) -> None:
        self.http.delete(self.base).raise_for_status()

    def log_of(self, job: str) -> str:
        """The task's journal ("" while the controller or its host cannot be reached)."""
        try:
            answer = self.http.get(f"{self.root}/v1/jobs/{job}/logs", params={"lines": 50})
        except httpx.HTTPError:
            return ""
        return answer.text if answer.status_code == 200 else ""

    def events(self, failover: float, into: queue.Queue) -> None:
        """Read the stream (on a thread), putting (kind, data) on `into`; ("closed", reason)
        when it ends."""
        try:
            with self.http.stream("POST", f"{self.base}/subscribe",
                                  json={"failover_timeout": failover},
                                  timeout=httpx.Timeout(60, read=30)) as stream:  # fmt: skip
                if stream.status_code != 200:
                    stream.read()
                    into.put(("closed", f"HTTP {stream.status_code}: {stream.text}"))
                    return
                kind = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        into.put((kind, json.loads(line[6:])))
                        kind = None
        except httpx.HTTPError as exc:
            into.put(("closed", str(exc)))
            return
        into.put(("closed", "the stream ended"))


class Sweep:
    def __init__(self, api: Api, args: argparse.Namespace, sweep_id: str, resuming: bool):
        self.api, self.args, self.id = api, args, sweep_id
        self.state = {p: PENDING for p in range(args.items)}
        self.results: dict[int, int] = {}
        self.launches = 0
        self.reconciling: set[str] = {self.task_id(p) for p in self.state} if resuming else set()
        self.suppressed = False

    def task_id(self, p: int) -> str:
        return f"{self.id}-p{p}"

    def item(self, task_id: str) -> int | None:
        prefix = f"{self.id}-p"
        return int(task_id[len(prefix) :]) if task_id.startswith(prefix) else None

    def finished(self) -> bool:
        return all(s == DONE for s in self.state.values())

    def on_subscribed(self) -> None:
        self.suppressed = False  # a new subscription is offered again
        if self.reconciling:
            self.api.call("reconcile", {"task_ids": sorted(self.reconciling)})

    def on_offers(self, offers: list[dict]) -> None:
        for offer in offers:
            self.use(offer)

    def use(self, offer: dict) -> None:
        """Launch as many pending items as the offer holds; decline it if none."""
        cpus, mem = offer["resources"].get("cpus", 0), offer["resources"].get("mem", 0)
        want_cpus, want_mem = self.args.cpus, self.args.mem * MiB
        pending = [p for p, s in sorted(self.state.items()) if s == PENDING]
        fits = int(min(cpus // want_cpus, mem // want_mem)) if not self.reconciling else 0
        chosen = pending[:fits]
        if not chosen:
            idle = not pending and not self.reconciling
            self.api.call("decline", {"offer_ids": [offer["offer_id"]],
                                      "refuse_seconds": 30 if idle else 1})  # fmt: skip
            if idle and not self.suppressed:
                self.api.call("suppress")
                self.suppressed = True
            return
        tasks = [{"name": self.task_id(p),
                  "argv": ["/bin/sh", "-c", 'sleep "$WORK"; echo "result=$((P * P))"'],
                  "env": {"P": str(p), "WORK": str(self.args.seconds)},
                  "resources": {"cpus": want_cpus, "mem": f"{self.args.mem}MiB"}}
                 for p in chosen]  # fmt: skip
        answer = self.api.call("accept", {"offer_ids": [offer["offer_id"]], "tasks": tasks})
        if answer is None:  # launched or not: ask
            ids = [self.task_id(p) for p in chosen]
            self.reconciling.update(ids)
            for p in chosen:
                self.state[p] = LAUNCHED
            self.api.call("reconcile", {"task_ids": ids})
            return
        if answer.status_code != 200:
            log.warning("accept refused: %s", answer.text)
            return
        for p in chosen:
            self.state[p] = LAUNCHED
        self.launches += len(chosen)
        log.info("launched %d item(s) on %s", len(chosen), offer["host"])

    def on_update(self, update: dict) -> None:
        p = self.item(update["task_id"])
        if p is None:
            return
        self.reconciling.discard(update["task_id"])
        state = update["state"]
        if self.state[p] == DONE:
            return
        if state == "finished":
            self.results[p] = self.result(update["job"])
            self.state[p] = DONE
            log.info("item %d done: %d", p, self.results[p])
        elif state in ENDED_BADLY:
            if self.state[p] == LAUNCHED and state != "unknown":
                log.info("item %d %s (%s): trying again", p, state, update.get("reason"))
            self.state[p] = PENDING
            if self.suppressed:
                self.api.call("revive")
                self.suppressed = False
        else:  # staging, running, unreachable: it is out there
            self.state[p] = LAUNCHED

    def result(self, job: str) -> int:
        for _ in range(240):  # the journal may lag the end; the controller may be restarting
            lines = [line for line in self.api.log_of(job).splitlines() if "result=" in line]
            if lines:
                return int(lines[-1].rsplit("result=", 1)[1].split()[0])
            time.sleep(0.25)
        raise RuntimeError(f"{job} finished without printing its result")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controller", required=True)
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--framework", default="sweep")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--cpus", type=float, default=0.5)
    parser.add_argument("--mem", type=int, default=64, help="MiB per task")
    parser.add_argument("--seconds", type=float, default=3.0, help="work per item")
    parser.add_argument("--failover", type=float, default=60.0)
    parser.add_argument("--state", type=Path, default=Path("sweep.state"))
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sweep: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    resuming = args.state.exists()
    sweep_id = args.state.read_text().strip() if resuming else secrets.token_hex(3)
    args.state.write_text(sweep_id)
    api = Api(args.controller, args.token_file.read_text().strip(), args.framework)
    sweep = Sweep(api, args, sweep_id, resuming)
    events: queue.Queue = queue.Queue()
    lost_at = None
    threading.Thread(target=api.events, args=(args.failover, events), daemon=True).start()
    while not sweep.finished():
        kind, data = events.get()
        if kind == "closed":  # the controller went away: subscribe again within the failover
            lost_at = lost_at or time.monotonic()
            if time.monotonic() - lost_at > args.failover:
                print(f"sweep: the stream ended: {data}", file=sys.stderr)
                return 1
            time.sleep(1)
            sweep.reconciling = {sweep.task_id(p) for p, s in sweep.state.items() if s != DONE}
            threading.Thread(target=api.events, args=(args.failover, events), daemon=True).start()
            continue
        if kind == "subscribed":
            lost_at = None
            log.info("subscribed (%s)", "resuming, reconciling" if resuming else "new sweep")
            sweep.on_subscribed()
        elif kind == "offers":
            sweep.on_offers(data["offers"])
        elif kind == "update":
            sweep.on_update(data)
        elif kind == "error":  # taken over, or torn down
            print(f"sweep: {data.get('message', data)}", file=sys.stderr)
            return 1
    api.teardown()
    args.out.write_text(json.dumps({"results": sweep.results, "launches": sweep.launches},
                                   sort_keys=True))  # fmt: skip
    args.state.unlink()
    log.info("all %d items done with %d launches", args.items, sweep.launches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
