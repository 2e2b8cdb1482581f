"""The reliability scenarios of issue 11, on a lab of real hosts (root, nspawn, 5 hosts).

Each scenario drives a real `meso controller` (its HTTP API with httpx, the CLI as a user types
it) or the CLI embedded, breaks something (SIGKILL, SSH resets, cuts, reboots, readers racing a
writer), and returns a `Result`: the figures it measured and the checks that failed. The tests
in tests/reliability call them with few repetitions; bench/reliability_bench.py with the full
counts.

Exactly once is proved from the hosts, not from the store: every task prints one line
`REL TAG JOB TASK INDEX ATTEMPT` (TAG is the scenario's) to its journal, and the journals of
every host are counted per task instance.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from meso_agentless.hosts.plane import each_host
from meso_agentless.testing.controller import ControllerProcess, start_controller
from meso_agentless.testing.lab import LabHandle

T = TypeVar("T")
MESO = [sys.executable, "-m", "meso_agentless"]
POLL = 0.1  # seconds between looks while waiting
FINE = 0.02  # seconds between looks while timing a transition (the figure's own error)
SMALL = {"cpus": 0.01, "mem": "8MiB"}
Instance = tuple[str, str, int]  # job, task, index


# -- results -----------------------------------------------------------------------------------


@dataclass
class Result:
    """What one scenario measured, and which of its checks failed (with the evidence)."""

    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def figure(self, name: str, value: Any) -> Any:
        self.figures[name] = round(value, 2) if isinstance(value, float) else value
        return value

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.failures.append(message)
        return ok

    def note(self, text: str) -> None:
        """Evidence worth reading when a check fails (states, log lines)."""
        self.evidence.append(text)

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [f"{self.scenario}: {'PASS' if self.passed else 'FAIL'}"]
        lines += [f"  {k} = {v}" for k, v in self.figures.items()]
        lines += [f"  FAILED: {f}" for f in self.failures]
        if self.failures:
            lines += [f"  evidence: {e}" for e in self.evidence[-40:]]
        return "\n".join(lines)


# -- the rig: a lab, a work directory, a tag ----------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float, every: float = POLL) -> T | None:
    """The first truthy value of `predicate` within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(every)


class Api:
    """The controller's API as a user's script calls it."""

    def __init__(self, controller: ControllerProcess, timeout: float = 60.0) -> None:
        self.controller = controller
        self.http = httpx.Client(
            base_url=controller.url, headers=controller.headers, timeout=timeout
        )

    def close(self) -> None:
        self.http.close()

    def submit(self, job: dict) -> httpx.Response:
        return self.http.post("/v1/jobs", json=job)

    def job(self, name: str) -> dict | None:
        answer = self.http.get(f"/v1/jobs/{name}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()

    def hosts(self) -> dict[str, dict]:
        return {h["host"]: h for h in self.http.get("/v1/hosts").json()["hosts"]}

    def host_state(self, host: str) -> str:
        return self.hosts()[host]["state"]

    def kill(self, name: str) -> httpx.Response:
        return self.http.delete(f"/v1/jobs/{name}")


class Rig:
    """One scenario's lab, directory, and tag (which journal lines are this scenario's)."""

    def __init__(self, lab: LabHandle, directory: Path) -> None:
        self.lab = lab
        self.dir = directory
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.tag = secrets.token_hex(4)
        self.since = int(time.time()) - 1
        self.hosts = [h.name for h in lab.hosts]
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
        self.base_env["MESO_INVENTORY"] = str(lab.inventory)

    # jobs

    def job(
        self,
        name: str,
        count: int,
        *,
        sleep: float = 0.0,
        echo_last: bool = False,
        kind: str = "batch",
        resources: dict | None = None,
        until: int | None = None,
        replace_after: float | None = None,
        batch_disconnect: str | None = None,
        **extra: Any,
    ) -> dict:
        """A job whose one task `t` says its identity in its journal (first, or after its sleep
        with `echo_last`), then sleeps; a service's instances only sleep, for ever. `until`: the
        task sleeps until that Unix time, then says it (any attempt, whenever it started).
        `replace_after`, `batch_disconnect`: the job's disconnect.replace_after and
        disconnect.batch (else the defaults)."""
        say = 'echo "REL $REL_TAG $MESO_JOB $MESO_TASK $MESO_INDEX $MESO_ATTEMPT"'
        env = {"REL_TAG": self.tag}
        if kind == "service":  # a replaced instance runs again by design: it says nothing
            script = "exec sleep infinity"
        elif until is not None:
            env["REL_END"] = str(until)
            script = f't=$((REL_END - $(date +%s))); [ "$t" -gt 0 ] && sleep "$t"; {say}'
        elif echo_last:
            script = f"sleep {sleep}; {say}"
        else:
            script = f"{say}; sleep {sleep}" if sleep else say
        task = {
            "name": "t",
            "count": count,
            "command": ["/bin/sh", "-c", script],
            "resources": resources or SMALL,
            "env": env,
            **extra,
        }
        job: dict[str, Any] = {"job": name, "type": kind, "tasks": [task]}
        if replace_after is not None:
            job.setdefault("disconnect", {})["replace_after"] = f"{round(replace_after)}s"
        if batch_disconnect is not None:
            job.setdefault("disconnect", {})["batch"] = batch_disconnect
        return job

    def write(self, job: dict) -> Path:
        path = self.dir / f"{job['job']}.json"  # JSON is YAML: meso run reads it
        path.write_text(json.dumps(job))
        return path

    def cli(
        self, env: dict[str, str], *args: str, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """`meso ARGS` as a user runs it; killed after `timeout` (exit -9, "timed out")."""
        try:
            return subprocess.run(
                [*MESO, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**self.base_env, **env},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            return subprocess.CompletedProcess(
                exc.cmd, -9, out, f"{err}\ntimed out after {timeout} s"
            )

    def timed_cli(
        self, env: dict[str, str], *args: str, timeout: float = 300
    ) -> tuple[float, subprocess.CompletedProcess]:
        started = time.monotonic()
        done = self.cli(env, *args, timeout=timeout)
        return time.monotonic() - started, done

    # the hosts' own view

    def on_hosts(self, argv: list[str]) -> dict[str, str]:
        """stdout of argv on every host, at once."""
        outs = each_host(self.hosts, lambda h: self.lab.run(h, argv, timeout=60).stdout)
        return dict(zip(self.hosts, outs, strict=True))

    def ran(self) -> Counter[tuple[str, str, int, int]]:
        """(job, task, index, attempt) -> how many times it said so in a journal."""
        # grep on the host: `journalctl --unit 'meso-*'` matches the glob against every unit
        # the journal ever saw, minutes on a host that ran thousands of tasks
        argv = [
            "sh",
            "-c",
            f"journalctl -q -o cat --no-pager --since @{self.since} | grep -F 'REL {self.tag} '"
            " || true",
        ]
        found: Counter[tuple[str, str, int, int]] = Counter()
        for out in self.on_hosts(argv).values():
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 6 and parts[0] == "REL" and parts[1] == self.tag:
                    found[(parts[2], parts[3], int(parts[4]), int(parts[5]))] += 1
        return found

    def units(self) -> dict[str, tuple[str, str]]:
        """Every meso unit loaded on the hosts: unit -> (host, its sub-state)."""
        argv = ["systemctl", "list-units", "--all", "--no-legend", "--plain", "meso-*"]
        found = {}
        for host, out in self.on_hosts(argv).items():
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 4 and parts[0].startswith("meso-"):
                    found[parts[0].removesuffix(".service")] = (host, parts[3])
        return found

    def running(self, job: str) -> dict[str, str]:
        """The job's units that run on the hosts now: unit -> host."""
        return {
            u: h
            for u, (h, sub) in self.units().items()
            if u.startswith(f"meso-{job}_") and sub in ("running", "start", "auto-restart")
        }

    def clean_hosts(self) -> None:
        """Stop every meso unit an earlier scenario may have left: each starts from nothing."""
        self.on_hosts(
            ["sh", "-c", "systemctl stop 'meso-*' ; systemctl reset-failed 'meso-*' ; true"]
        )

    def exactly_once(self, result: Result, expected: set[Instance], settle: float = 15.0) -> None:
        """Each expected instance ran exactly once (one line in one journal), whatever its
        attempt number; nothing else of this scenario ran."""

        def lines() -> dict[Instance, list[int]]:
            out: dict[Instance, list[int]] = defaultdict(list)
            for (job, task, index, attempt), n in self.ran().items():
                out[(job, task, index)] += [attempt] * n
            return out

        # journald takes the lines a moment after the task prints them
        wait_for(lambda: expected <= set(lines()), settle, every=0.5)
        time.sleep(1.0)
        seen = lines()
        twice = {i: a for i, a in seen.items() if len(a) > 1}
        never = sorted(expected - set(seen))
        extra = sorted(set(seen) - expected)
        result.figure("instances", len(expected))
        result.figure("ran twice", len(twice))
        result.figure("never ran", len(never))
        result.check(
            not twice,
            f"{len(twice)} instance(s) ran more than once "
            f"(instance: attempts that ran): {dict(sorted(twice.items())[:10])}",
        )
        result.check(not never, f"{len(never)} instance(s) never ran: {never[:10]}")
        result.check(not extra, f"{len(extra)} unexpected instance(s) ran: {extra[:10]}")


def instances(job: str, count: int, task: str = "t") -> set[Instance]:
    return {(job, task, i) for i in range(count)}


@contextmanager
def controller(rig: Rig, name: str = "ctl", *extra: str) -> Iterator[ControllerProcess]:
    """A `meso controller` on the rig's lab, stopped (or killed) at the end."""
    ctl = start_controller(rig.lab.inventory, rig.dir / name, *extra)
    try:
        yield ctl
    finally:
        try:
            ctl.stop(timeout=15)
        except subprocess.TimeoutExpired:
            ctl.process.kill()
            ctl.process.wait()


def log_lines(ctl: ControllerProcess) -> list[str]:
    """The controller's log (its events are lines of it)."""
    return ctl.log.read_text(errors="replace").splitlines()


def log_tail(ctl: ControllerProcess, lines: int = 30, grep: str | None = None) -> list[str]:
    text = log_lines(ctl)
    if grep is not None:
        text = [line for line in text if grep in line]
    return text[-lines:]


def final_state(api: Api, name: str, timeout: float) -> dict | None:
    """The job once it is no longer active (None if it still is after `timeout`)."""
    return wait_for(
        lambda: (j := api.job(name)) is not None and j["state"] != "active" and j,
        timeout,
        every=0.2,
    )


def latest(job: dict) -> dict[tuple[str, int], dict]:
    out = {}
    for t in job["tasks"]:
        out[(t["task"], t["index"])] = t
    return out


def states(job: dict) -> Counter[str]:
    return Counter(t["state"] for t in job["tasks"])


# -- 1. SIGKILL the controller and `meso run` mid-launch ----------------------------------------


def sigkill_mid_launch(
    lab: LabHandle,
    directory: Path,
    points: int,
    embedded_points: int,
    tasks: int = 64,
    window: float | None = None,
    seed: int | None = None,
) -> Result:
    """SIGKILL `meso controller` at `points` random moments after a job of `tasks` tasks is
    posted (within `window` seconds, by default 1.25 times the time the controller takes to
    answer the POST, which is its first cycle placing and launching them all), restart it,
    and run `meso run` again as the user whose command broke would (README: running it again
    resumes); then SIGKILL an embedded `meso run` at `embedded_points` random moments after
    its first placement, and run it again to its end. Every job finishes, nothing is lost,
    nothing runs twice (counted on the hosts: a job run again from the start counts)."""
    result = Result(f"SIGKILL at {points} + {embedded_points} random points, {tasks}-task jobs")
    rig = Rig(lab, directory)
    rig.clean_hosts()
    rng = random.Random(seed)  # noqa: S311 - fault injection, not secrets
    expected: set[Instance] = set()
    outcomes: dict[str, dict] = {}
    finish: list[float] = []
    during_submit = 0
    resubmitted = 0
    ctl = start_controller(lab.inventory, rig.dir / "ctl")
    try:
        # calibration: how long the first cycle (placing and launching every task) takes here
        api = Api(ctl)
        expected |= instances("rkcal", tasks)
        started = time.monotonic()
        api.submit(rig.job("rkcal", tasks, sleep=1)).raise_for_status()
        window = window if window is not None else 1.25 * (time.monotonic() - started)
        outcomes["rkcal"] = final_state(api, "rkcal", timeout=120) or {"state": "?", "tasks": []}
        api.close()
        result.figure("kill window after POST, s", window)
        for i in range(points):
            name = f"rk{i}"
            job = rig.job(name, tasks, sleep=1)
            expected |= instances(name, tasks)
            api = Api(ctl)
            answered = threading.Event()

            def post(api: Api = api, job: dict = job, answered: threading.Event = answered) -> None:
                with suppress(httpx.HTTPError):
                    api.submit(job)
                    answered.set()

            poster = threading.Thread(target=post, daemon=True)
            poster.start()
            time.sleep(rng.uniform(0, window))
            ctl.process.send_signal(signal.SIGKILL)
            ctl.process.wait()
            during_submit += not answered.is_set()
            poster.join(timeout=30)
            api.close()
            ctl = start_controller(lab.inventory, rig.dir / "ctl")
            restarted = time.monotonic()
            api = Api(ctl)
            stored = api.job(name)
            resubmitted += stored is None  # killed before the job was stored
            before = "missing" if stored is None else f"{stored['state']} (run {stored['run']})"
            # the user's `meso run` broke with the controller: they run it again, to resume
            again = rig.cli(ctl.env, "run", str(rig.write(job)), timeout=300)
            done = api.job(name)
            api.close()
            if not result.check(
                again.returncode == 0 and done is not None and done["state"] != "active",
                f"{name}: meso run again exited {again.returncode}: {again.stderr[-300:]}",
            ):
                result.note(f"{name}: " + " | ".join(log_tail(ctl, 15)))
                continue
            finish.append(time.monotonic() - restarted)
            outcomes[name] = done
            if done["run"] > 1:
                result.note(
                    f"{name}: after the restart, before `meso run` again: {before}; "
                    f"then: {again.stdout.strip()} (run {done['run']})"
                )
    finally:
        with suppress(subprocess.TimeoutExpired):
            ctl.stop(timeout=15)
    # the embedded `meso run`, killed the same way
    env = {"MESO_STATE": str(rig.dir / "embedded.db")}
    for i in range(embedded_points):
        name = f"re{i}"
        path = rig.write(rig.job(name, tasks, sleep=1))
        expected |= instances(name, tasks)
        run = subprocess.Popen(
            [*MESO, "run", str(path)],
            env={**rig.base_env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        placed = threading.Event()

        def read(run: subprocess.Popen = run, placed: threading.Event = placed) -> None:
            for line in run.stderr:  # type: ignore[union-attr]
                if "placed on" in line:
                    placed.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        placed.wait(timeout=60)
        time.sleep(rng.uniform(0, window))
        run.send_signal(signal.SIGKILL)
        run.wait()
        reader.join(timeout=10)
        restarted = time.monotonic()
        stored = _peek_job(Path(env["MESO_STATE"]), name)
        before = "missing" if stored is None else f"{stored[0]} (run {stored[1]})"
        again = rig.cli(env, "run", str(path), "-o", "json", timeout=300)
        finish.append(time.monotonic() - restarted)
        if not result.check(
            again.returncode == 0,
            f"{name}: meso run again exited {again.returncode}: {again.stderr.strip()[-300:]}",
        ):
            continue
        status = rig.cli(env, "status", name, "-o", "json")
        outcomes[name] = json.loads(status.stdout)["jobs"][0]
        if outcomes[name]["run"] > 1:
            result.note(
                f"{name}: in the state file after the kill: {before}; meso run again: "
                f"{json.loads(again.stdout)['message']} (run {outcomes[name]['run']})"
            )
    result.figure("kill points", points + embedded_points)
    result.figure("controller kills before POST /v1/jobs answered", during_submit)
    result.figure("jobs submitted again (killed before stored)", resubmitted)
    result.figure("jobs finished", sum(o["state"] == "done" for o in outcomes.values()))
    result.figure(
        "jobs run again from the start by `meso run` again (run 2)",
        {
            "controller": sum(o["run"] > 1 for n, o in outcomes.items() if n.startswith("rk")),
            "embedded": sum(o["run"] > 1 for n, o in outcomes.items() if n.startswith("re")),
        },
    )
    lost = [(n, t["unit"]) for n, o in outcomes.items() for t in o["tasks"] if t["state"] == "lost"]
    result.figure("tasks lost", len(lost))
    if finish:
        result.figure("restart to finished, max s", max(finish))
    for name, o in outcomes.items():
        counts = Counter(t["state"] for t in latest(o).values())
        result.check(
            o["state"] == "done" and counts == {"finished": tasks},
            f"{name}: {o['state']} with {dict(counts)}",
        )
    result.check(
        len(outcomes) == 1 + points + embedded_points,
        f"{1 + points + embedded_points - len(outcomes)} job(s) never finished",
    )
    result.check(not lost, f"tasks marked lost: {lost[:10]}")
    rig.exactly_once(result, expected)
    return result


def _peek_job(state: Path, name: str) -> tuple[str, int] | None:
    """(state, run) of a job in a state file, read only: what a killed command left."""
    if not state.exists():
        return None
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)) as db:
        row = db.execute("SELECT state, run FROM jobs WHERE name = ?", (name,)).fetchone()
    return None if row is None else (row[0], row[1])


# -- 2. SSH connections reset during launches --------------------------------------------------


def ssh_resets(
    lab: LabHandle,
    directory: Path,
    launches: int,
    resets: int,
    per_job: int = 50,
    seed: int | None = None,
) -> Result:
    """`launches` task launches in jobs of `per_job` (spread over every host), while the
    host-side sshd session processes of a random host are killed `resets` times, at random
    moments while the jobs are being submitted. Exactly one unit per task instance."""
    result = Result(f"{resets} SSH resets during {launches} launches")
    rig = Rig(lab, directory)
    rig.clean_hosts()
    rng = random.Random(seed)  # noqa: S311 - fault injection, not secrets
    jobs = math.ceil(launches / per_job)
    expected: set[Instance] = set()
    mid_launch = 0
    done_resets = 0
    killed = 0
    names = []
    with controller(rig) as ctl:
        api = Api(ctl, timeout=120)
        started = time.monotonic()
        for k in range(jobs):
            name = f"rs{k}"
            count = min(per_job, launches - k * per_job)
            names.append(name)
            expected |= instances(name, count)
            job = rig.job(name, count, sleep=0.5, strategy="spread")
            posting = threading.Event()
            posting.set()

            def post(job: dict = job, posting: threading.Event = posting) -> None:
                try:
                    with suppress(httpx.HTTPError):
                        api.submit(job)
                finally:
                    posting.clear()

            poster = threading.Thread(target=post, daemon=True)
            poster.start()
            for _ in range(resets * (k + 1) // jobs - resets * k // jobs):
                time.sleep(rng.uniform(0.0, 0.2))
                mid_launch += posting.is_set()
                killed += lab.reset_ssh(rng.choice(rig.hosts))
                done_resets += 1
            poster.join(timeout=120)
        finals = {n: final_state(api, n, timeout=180) for n in names}
        took = time.monotonic() - started
        api.close()
        events = log_lines(ctl)
    result.figure("launches", launches)
    result.figure("resets", done_resets)
    result.figure("resets while a submission was launching", mid_launch)
    result.figure("sshd processes killed", killed)
    result.figure("seconds, all jobs", took)
    relaunched = [line for line in events if "unreachable during the launch" in line]
    result.figure("launches that lost their connection (reconciled)", len(relaunched))
    for name, final in finals.items():
        if final is None:
            result.check(False, f"{name}: still active after 180 s")
            continue
        counts = Counter(t["state"] for t in latest(final).values())
        result.check(
            final["state"] == "done" and set(counts) == {"finished"},
            f"{name}: {final['state']} with {dict(counts)}",
        )
        attempts = [t for t in final["tasks"] if t["attempt"] != 1 or t["state"] == "lost"]
        if attempts:
            result.note(
                f"{name}: rows beyond attempt 1 or lost: "
                f"{[(t['index'], t['attempt'], t['state']) for t in attempts][:10]}"
            )
    rig.exactly_once(result, expected)
    if result.failures:
        result.note(
            "controller log: "
            + " | ".join(line for line in events if "unreachable" in line or "refused" in line)[
                -3000:
            ]
        )
    return result


# -- 3. one host of five cut off for a while ----------------------------------------------------


def default_replace_after() -> float:
    """How long a service instance stays unreachable before it is replaced, by default: the
    job file's `replace_after` default where the job file has one, else the controller's."""
    from meso_agentless.spec import Job, parse_duration

    def find(node: Any) -> Any:
        if isinstance(node, dict):
            props = node.get("properties", {})
            if "replace_after" in props and "default" in props["replace_after"]:
                return props["replace_after"]["default"]
            for value in node.values():
                found = find(value)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = find(value)
                if found is not None:
                    return found
        return None

    found = find(Job.model_json_schema())
    if found is not None:
        return float(parse_duration(found))
    from meso_agentless.controller import loop

    return float(loop.REPLACE_AFTER)


def _service_and_batch(
    rig: Rig,
    api: Api,
    service: str,
    batch: str,
    batch_count: int,
    batch_sleep: float,
    replace_after: float | None = None,
) -> tuple[dict, dict]:
    """A 3-instance service, one instance per host, and a batch job (say last), both spread
    over the hosts and running."""
    svc = rig.job(
        service,
        3,
        kind="service",
        strategy="spread",
        constraints=[{"op": "unique_host"}],
        replace_after=replace_after,
    )
    bat = rig.job(
        batch,
        batch_count,
        sleep=batch_sleep,
        echo_last=True,
        strategy="spread",
        replace_after=replace_after,
    )
    for job in (svc, bat):
        answer = api.submit(job)
        answer.raise_for_status()
    up = wait_for(lambda: (j := api.job(service)) and states(j) == {"running": 3} and j, 30)
    running = wait_for(
        lambda: (j := api.job(batch)) and states(j) == {"running": batch_count} and j, 30
    )
    if not up or not running:
        raise AssertionError(f"the jobs did not start: {api.job(service)} {api.job(batch)}")
    return up, running


def first_time(predicate: Callable[[], bool], timeout: float, every: float = FINE) -> float | None:
    """Monotonic time at which `predicate` first held (polled `every` seconds), or None."""
    hit = wait_for(lambda: predicate() and time.monotonic(), timeout, every=every)
    return hit or None


def _agree(rig: Rig, api: Api, job: str) -> tuple[dict[str, str], dict[str, str]]:
    """(what the store says runs, what runs on the hosts), unit -> host, for a job."""
    found = api.job(job) or {"tasks": []}
    store = {t["unit"]: t["host"] for t in found["tasks"] if t["state"] == "running"}
    return store, rig.running(job)


def detection(lab: LabHandle, api: Api, host: str, probes: int, rng: random.Random) -> Result:
    """Cut `host` `probes` times (at a random phase of the controller's sampling) until the
    controller says it is unreachable, heal it until it says up: the two delays each time, and
    how long the host had been silent (its `age`) when the controller first said unreachable
    (over 5 s: the state was decided late)."""
    result = Result("detection")
    down, back, ages = [], [], []
    for _ in range(probes):
        time.sleep(rng.uniform(0.0, 1.0))
        cut_at = time.monotonic()
        lab.cut(host)
        try:
            seen = wait_for(
                lambda: (
                    (h := api.hosts()[host])["state"] == "unreachable" and (time.monotonic(), h)
                ),
                30,
                every=FINE,
            )
        finally:
            lab.heal(host)
        healed = time.monotonic()
        up = first_time(lambda: api.host_state(host) == "up", 30)
        if seen:
            down.append(round(seen[0] - cut_at, 2))
            ages.append(seen[1]["age"])
        if up is not None:
            back.append(round(up - healed, 2))
        time.sleep(1.5)  # settled: sampled again since
    result.figure("cut to unreachable, s", down)
    result.figure("silent when said unreachable, s", ages)
    result.figure("heal to up, s", back)
    return result


def cut_one_host(
    lab: LabHandle,
    directory: Path,
    cut_seconds: float | None = None,
    probes: int = 2,
    replace_after: float | None = None,
    seed: int | None = None,
) -> Result:
    """First `probes` short cuts of a host (time to unreachable, time back to up). Then a
    3-instance service (one per host) and three batch jobs run, one that may retry (on-failure,
    the default), one that may not (restart never) and one that waits for its host
    (disconnect.batch wait), their tasks until a few seconds after the heal;
    the host of one service instance is cut off for `cut_seconds` (default: replace_after +
    10 s), then healed. `replace_after`: the jobs' disconnect.replace_after (default: the job
    file's default).

    Unreachable <= 5 s after the cut; the service instance and the retrying batch tasks there
    replaced after replace_after, the others waited for; after the heal up <= 2 s, the
    replaced originals stopped, exactly 3 service instances, store equal to the hosts (for
    every job) within a heartbeat; the batch jobs finish, each task once."""
    job_replace_after = replace_after
    replace_after = replace_after if replace_after is not None else default_replace_after()
    cut_seconds = cut_seconds if cut_seconds is not None else replace_after + 10
    result = Result(
        f"cut 1 of 5 hosts for {cut_seconds:.0f} s (replace_after {replace_after:.0f} s)"
    )
    rig = Rig(lab, directory)
    rig.clean_hosts()
    with controller(rig) as ctl:
        api = Api(ctl)
        if probes:
            spare = rig.hosts[-1]
            rng = random.Random(seed)  # noqa: S311 - fault injection, not secrets
            probed = detection(lab, api, spare, probes, rng)
            downs, ups = probed.figures["cut to unreachable, s"], probed.figures["heal to up, s"]
            for name, value in probed.figures.items():
                result.figure(f"probes on {spare}: {name}", value)
            result.check(
                len(downs) == probes and max(downs) <= 5.0 + 2 * POLL,
                f"{spare} seen unreachable {downs} s after its cuts (target <= 5 s), silent for "
                f"{probed.figures['silent when said unreachable, s']} s by then",
            )
            result.check(
                len(ups) == probes and max(ups) <= 2.0 + 2 * POLL,
                f"{spare} seen up {ups} s after its heals (target <= 2 s)",
            )
        end = int(time.time() + 2 + cut_seconds + 8)  # the batch tasks end after the heal
        jobs = {
            "rcweb": rig.job("rcweb", 3, kind="service", strategy="spread",
                             constraints=[{"op": "unique_host"}], replace_after=job_replace_after),
            "rcretry": rig.job("rcretry", 10, until=end, strategy="spread",
                               replace_after=job_replace_after),
            "rconce": rig.job("rconce", 5, until=end, strategy="spread",
                              restart={"policy": "never"}, replace_after=job_replace_after),
            "rcwait": rig.job("rcwait", 5, until=end, strategy="spread",
                              replace_after=job_replace_after, batch_disconnect="wait"),
        }  # fmt: skip
        for job in jobs.values():
            api.submit(job).raise_for_status()
        counts = {"rcweb": 3, "rcretry": 10, "rconce": 5, "rcwait": 5}
        started = {
            name: wait_for(lambda n=name, c=c: (j := api.job(n)) and states(j) == {"running": c}
                           and j, 30)
            for name, c in counts.items()
        }  # fmt: skip
        if not all(started.values()):
            raise AssertionError(f"the jobs did not start: {started}")
        victim = next(t["host"] for t in started["rcweb"]["tasks"] if t["index"] == 0)
        originals = {
            name: {t["index"]: t for t in job["tasks"] if t["host"] == victim}
            for name, job in started.items()
        }
        result.figure("victim", victim)
        result.figure("its tasks", {n: len(o) for n, o in originals.items()})
        logged = len(log_lines(ctl))
        cut_at = time.monotonic()
        lab.cut(victim)
        try:
            suspect = first_time(lambda: api.host_state(victim) != "up", 30)
            unreachable = first_time(lambda: api.host_state(victim) == "unreachable", 30)
            task_unreachable = first_time(
                lambda: latest(api.job("rcweb"))[("t", 0)]["state"] == "unreachable", 30
            )
            if suspect:
                result.figure("cut to suspect, s", suspect - cut_at)
            if not result.check(unreachable is not None, f"{victim} never unreachable"):
                return result
            result.figure("cut to unreachable, s", unreachable - cut_at)
            result.check(
                unreachable - cut_at <= 5.0 + 2 * POLL,
                f"{victim} unreachable {unreachable - cut_at:.2f} s after the cut (target <= 5 s)",
            )
            for name in ("rcretry", "rconce", "rcwait"):
                seen = {t["index"]: t["state"] for t in api.job(name)["tasks"]
                        if t["host"] == victim}  # fmt: skip
                result.check(
                    set(seen.values()) <= {"unreachable"},
                    f"{name} tasks on {victim} are {seen}, not unreachable",
                )

            def replacements(name: str) -> dict[int, dict]:
                """The newest attempt of each of the victim's instances, if newer."""
                out = {}
                for t in api.job(name)["tasks"]:
                    old = originals[name].get(t["index"])
                    if old is not None and t["attempt"] > old["attempt"]:
                        out[t["index"]] = t
                return out

            since = task_unreachable or unreachable
            for name in ("rcweb", "rcretry"):
                want = len(originals[name])
                replaced_at = first_time(
                    lambda n=name, w=want: len(replacements(n)) == w, replace_after + 30
                )
                if not result.check(
                    replaced_at is not None,
                    f"{name}: {victim}'s instances not replaced within replace_after + 30 s: "
                    f"{replacements(name)}",
                ):
                    continue
                result.figure(f"{name}: task unreachable to replaced, s", replaced_at - since)
                result.check(
                    replace_after - 1.0 <= replaced_at - since <= replace_after + 3.0,
                    f"{name} replaced {replaced_at - since:.1f} s after it became unreachable "
                    f"(replace_after {replace_after:.0f} s)",
                )
                new = replacements(name)
                result.check(
                    all(t["host"] != victim for t in new.values()),
                    f"{name}: replacements on {victim}: {new}",
                )
                running = wait_for(
                    lambda n=name: all(t["state"] == "running" for t in replacements(n).values()),
                    20,
                )
                result.check(bool(running), f"{name}: replacements not running: {new}")
            remaining = cut_at + cut_seconds - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            # restart never, or disconnect.batch wait: waited for, not replaced
            for name in ("rconce", "rcwait"):
                result.check(not replacements(name), f"{name} replaced: {replacements(name)}")
        finally:
            lab.heal(victim)
        healed = time.monotonic()
        result.figure("cut, s", healed - cut_at)
        # what the controller said while the host could not be asked must be true
        said = [line for line in log_lines(ctl)[logged:] if f"on {victim}: stopped" in line]
        result.figure("'stopped' events while the host was cut", len(said))
        result.check(
            not said,
            f"while {victim} was cut off the controller said {len(said)} time(s) that it stopped "
            f"an instance there (nothing there could be asked): {said[:3]}",
        )
        up = first_time(lambda: api.host_state(victim) == "up", 30)
        if result.check(up is not None, f"{victim} not up 30 s after the heal"):
            result.figure("heal to up, s", up - healed)
            result.check(
                up - healed <= 2.0 + 2 * POLL,
                f"{victim} up {up - healed:.2f} s after the heal (target <= 2 s)",
            )

        def agreed() -> bool:
            for name, count in counts.items():
                store, hosts = _agree(rig, api, name)
                if store != hosts or (name == "rcweb" and len(hosts) != count):
                    return False
            return True

        agree = first_time(agreed, 30, every=POLL)
        views = {name: _agree(rig, api, name) for name in counts}
        if result.check(
            agree is not None, f"store and hosts disagree 30 s after the heal: {views}"
        ):
            result.figure("heal to store == hosts (every job), s", agree - healed)
            result.check(
                up is None or agree - up <= 2.0,
                f"store and hosts agreed {agree - up:.2f} s after {victim} was up "
                "(target: one heartbeat)",
            )
        time.sleep(2)  # a few more cycles: still exactly 3, still equal
        store, hosts = _agree(rig, api, "rcweb")
        result.figure("service instances running on the hosts", len(hosts))
        result.check(
            len(hosts) == 3 and store == hosts,
            f"after the heal: hosts run {hosts}, the store says {store}",
        )
        for name in ("rcweb", "rcretry"):
            still = [t["unit"] for t in originals[name].values()
                     if t["unit"] in rig.running(name)]  # fmt: skip
            result.check(not still, f"{name}: replaced originals still run: {still}")
        for name in ("rcretry", "rconce", "rcwait"):
            final = final_state(api, name, timeout=60)
            if result.check(final is not None, f"{name} still active 60 s after the heal"):
                got = Counter(t["state"] for t in latest(final).values())
                result.figure(f"{name}", f"{final['state']} {dict(got)}")
                result.check(
                    final["state"] == "done" and got == {"finished": counts[name]},
                    f"{name} {final['state']} with {dict(got)}",
                )
        killed = rig.cli(ctl.env, "kill", "rcweb")
        result.check(killed.returncode in (0, 1), f"meso kill: {killed.stderr}")
        left = rig.running("rcweb")
        result.check(not left, f"units of rcweb still running after meso kill: {left}")
        result.note("controller: " + " | ".join(log_tail(ctl, 40, grep=victim)))
        api.close()
    rig.exactly_once(
        result, instances("rcretry", 10) | instances("rconce", 5) | instances("rcwait", 5)
    )
    return result


# -- 4. one host cut before a run -------------------------------------------------------------


class HostWatch:
    """Polls the controller's view of the hosts every POLL in the background and keeps the
    first time each (host, state) was seen after it started."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.started = time.monotonic()
        self.first: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(httpx.HTTPError):
                now = time.monotonic()
                for host, info in self.api.hosts().items():
                    self.first.setdefault((host, info["state"]), now)
            self._stop.wait(POLL)

    def seen(self, host: str, state: str, timeout: float = 30) -> float | None:
        """Seconds from the start to the first time `host` was `state` (waiting for it)."""
        found = wait_for(lambda: self.first.get((host, state)), timeout)
        return None if found is None else found - self.started

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def launch_deadline() -> float:
    """The controller's deadline for one launch (what one dead host may cost a run, once)."""
    import inspect

    from meso_agentless.controller.loop import Controller

    return float(inspect.signature(Controller).parameters["launch_timeout"].default)


def cut_before_run(lab: LabHandle, directory: Path, run_timeout: float = 45.0) -> Result:
    """The ten 1-second tasks run, with every host up and then with one of five cut before it
    (the host the first run used: binpack fills it first), embedded and through a controller.
    The cut costs at most its deadline once: each run within 3 s of its all-hosts-up time;
    `meso hosts`, `meso plan` and GET /v1/hosts through the controller answer at once. Last,
    the host is cut just before a run, before the controller can have noticed: a launch there
    may cost its deadline once, not once per task."""
    result = Result("cut 1 of 5 hosts before a run")
    rig = Rig(lab, directory)
    rig.clean_hosts()
    embedded = {"MESO_STATE": str(rig.dir / "embedded.db")}
    expected: set[Instance] = set()

    def run(env: dict[str, str], name: str, timeout: float = 300) -> tuple[float, dict]:
        path = rig.write(
            rig.job(name, 10, sleep=1, echo_last=True, resources={"cpus": 0.1, "mem": "16MiB"})
        )
        expected.update(instances(name, 10))
        took, done = rig.timed_cli(env, "run", str(path), "-o", "json", timeout=timeout)
        result.check(
            done.returncode == 0,
            f"{name}: exit {done.returncode} after {took:.1f} s: {done.stderr.strip()[-300:]}",
        )
        try:
            return took, json.loads(done.stdout)
        except ValueError:
            return took, {"tasks": []}

    with controller(rig) as ctl:
        api = Api(ctl)
        base_ctl, first = run(ctl.env, "rb0")
        base_emb, _ = run(embedded, "rb1")
        victim = Counter(t["host"] for t in first["tasks"]).most_common(1)[0][0]
        result.figure("all up: run through the controller, s", base_ctl)
        result.figure("all up: run embedded, s", base_emb)
        result.figure("victim", victim)
        lab.cut(victim)
        try:
            watch = HostWatch(api)
            # embedded: a fresh process whose first look at the hosts is right after the cut
            took_emb, done = run(embedded, "rb2")
            result.figure("cut: run embedded, s", took_emb)
            result.check(
                took_emb <= base_emb + 3.0,
                f"embedded run took {took_emb:.1f} s with {victim} cut, {base_emb:.1f} s with "
                "all up (target: within 3 s)",
            )
            result.check(
                victim not in {t["host"] for t in done["tasks"]},
                f"embedded run placed tasks on the cut {victim}",
            )
            took, _hosts = rig.timed_cli(embedded, "hosts", "-o", "json")
            result.figure("cut: meso hosts embedded, s", took)
            unreachable = watch.seen(victim, "unreachable")
            watch.stop()
            suspect = watch.first.get((victim, "suspect"))
            if suspect is not None:
                result.figure("cut to suspect (controller), s", suspect - watch.started)
            if result.check(unreachable is not None, f"the controller never saw {victim} cut"):
                result.figure("cut to unreachable (controller), s", unreachable)
            took_ctl, done = run(ctl.env, "rb3")
            result.figure("cut: run through the controller, s", took_ctl)
            result.check(
                took_ctl <= base_ctl + 3.0,
                f"run through the controller took {took_ctl:.1f} s with {victim} cut, "
                f"{base_ctl:.1f} s with all up (target: within 3 s)",
            )
            took, hosts = rig.timed_cli(ctl.env, "hosts", "-o", "json")
            result.figure("cut: meso hosts through the controller, s", took)
            result.check(
                hosts.returncode == 0 and took < 1.0,
                f"meso hosts took {took:.2f} s (exit {hosts.returncode})",
            )
            started = time.monotonic()
            api.hosts()
            took = time.monotonic() - started
            result.figure("cut: GET /v1/hosts, s", took)
            result.check(took < 0.2, f"GET /v1/hosts took {took:.2f} s")
            plan = rig.write(rig.job("rbplan", 10, resources={"cpus": 0.1, "mem": "16MiB"}))
            took, planned = rig.timed_cli(ctl.env, "plan", str(plan), "-o", "json")
            result.figure("cut: meso plan through the controller, s", took)
            result.check(
                planned.returncode == 0 and took < 1.0,
                f"meso plan took {took:.2f} s (exit {planned.returncode}): "
                f"{planned.stderr.strip()[-200:]}",
            )
            # cut just before a run: the controller cannot know yet. The launch in flight when
            # the host went silent may have started (it waits for the host's word: never twice);
            # the others were never sent and go elsewhere at once
            lab.heal(victim)
            wait_for(lambda: api.host_state(victim) == "up", 30)
            time.sleep(1.5)  # a fresh sample of every host
            lab.cut(victim)
            path = rig.write(
                rig.job("rb4", 10, sleep=1, echo_last=True, resources={"cpus": 0.1, "mem": "16MiB"})
            )
            expected.update(instances("rb4", 10))
            started = time.monotonic()
            submitted = rig.cli(ctl.env, "run", str(path), "--detach", timeout=run_timeout)
            result.check(submitted.returncode == 0, f"rb4 --detach: {submitted.stderr[-300:]}")

            def all_but_in_flight() -> bool:
                now = latest(api.job("rb4") or {"tasks": []})
                left = [t for t in now.values() if t["state"] != "finished"]
                return len(now) == 10 and len(left) <= 1 and all(t["host"] == victim for t in left)

            settled = first_time(all_but_in_flight, run_timeout, every=POLL)
            took_now = (settled or time.monotonic()) - started
            result.figure("cut just before: all but the launch in flight finished, s", took_now)
            deadline = launch_deadline()
            result.check(
                settled is not None and took_now <= base_ctl + deadline + 3.0,
                f"right after the cut, the tasks not in flight took {took_now:.1f} s, "
                f"{base_ctl:.1f} s with all up (target: within the launch deadline "
                f"({deadline:.0f} s) once + 3 s)",
            )
            in_flight = [line for line in log_tail(ctl, 10_000, grep="rb4_t_")
                         if "during the launch" in line]  # fmt: skip
            result.figure("cut just before: launches that waited on the cut host", len(in_flight))
            result.check(len(in_flight) <= 1, f"{len(in_flight)} launches waited on {victim}")
        finally:
            lab.heal(victim)
        final = final_state(api, "rb4", timeout=240)
        rows = (final or api.job("rb4") or {"tasks": []})["tasks"]
        result.figure(
            "cut just before: rb4 after the heal",
            f"{(final or {}).get('state', 'active')} {dict(states({'tasks': rows}))}",
        )
        counts = Counter(t["state"] for t in latest({"tasks": rows}).values())
        result.check(
            final is not None and final["state"] == "done" and counts == {"finished": 10},
            f"rb4 after the heal: {(final or {}).get('state', 'active')} {dict(counts)}",
        )
        if result.failures:
            result.note("controller: " + " | ".join(log_tail(ctl, 20, grep="rb4")))
        api.close()
    rig.exactly_once(result, expected)
    return result


# -- 5. the controller cut off from 3 of 5 hosts ------------------------------------------------


def controller_partitioned(
    lab: LabHandle,
    directory: Path,
    hold: float | None = None,
    replace_after: float | None = None,
    heal_gap: float = 1.0,
) -> Result:
    """A 3-instance service (one per host) and a batch job run; the three hosts of the service
    are cut off at once for `hold` seconds (default replace_after + 10; `replace_after`: the
    jobs' disconnect.replace_after, else the default): the controller looks cut off, so
    nothing is replaced, during the cut nor when the hosts return (healed one after another,
    `heal_gap` seconds apart). After the heal everything resumes: the same instances run, the
    batch job finishes, each task once, a new job runs."""
    job_replace_after = replace_after
    replace_after = replace_after if replace_after is not None else default_replace_after()
    hold = hold if hold is not None else replace_after + 10
    result = Result(
        f"controller cut from 3 of 5 hosts for {hold:.0f} s (replace_after {replace_after:.0f} s)"
    )
    rig = Rig(lab, directory)
    rig.clean_hosts()
    batch_count = 10
    with controller(rig) as ctl:
        api = Api(ctl)
        svc, _bat = _service_and_batch(
            rig,
            api,
            "rpweb",
            "rpbatch",
            batch_count,
            batch_sleep=min(20.0, hold / 2),
            replace_after=job_replace_after,
        )
        victims = sorted({t["host"] for t in svc["tasks"]})
        before = {(t["index"], t["attempt"], t["unit"]) for t in svc["tasks"]}
        result.figure("cut hosts", ",".join(victims))
        cut_at = time.monotonic()
        for v in victims:
            lab.cut(v)
        replaced: list[str] = []
        try:
            all_unreachable = first_time(
                lambda: all(api.host_state(v) == "unreachable" for v in victims), 30
            )
            if all_unreachable:
                result.figure("cut to all 3 unreachable, s", all_unreachable - cut_at)
            while time.monotonic() < cut_at + hold:
                job = api.job("rpweb")
                now = {(t["index"], t["attempt"], t["unit"]) for t in job["tasks"]}
                lost = [t["unit"] for t in job["tasks"] if t["state"] == "lost"]
                if now != before or lost:
                    replaced = sorted(str(x) for x in now - before) + lost
                    break
                time.sleep(0.5)
        finally:
            for i, v in enumerate(victims):  # a network comes back a piece at a time
                if i:
                    time.sleep(heal_gap)
                lab.heal(v)
        healed = time.monotonic()
        result.figure("held, s", healed - cut_at)
        result.check(not replaced, f"replaced while the controller was cut off: {replaced}")
        paused = [line for line in log_lines(ctl) if "replacing nothing" in line]
        result.check(bool(paused), "the controller never said it paused replacements")
        up = first_time(lambda: all(api.host_state(v) == "up" for v in victims), 30)
        if result.check(up is not None, "the hosts were not up 30 s after the heal"):
            result.figure("heal to all up, s", up - healed)

        def agreed() -> bool:
            store, hosts = _agree(rig, api, "rpweb")
            return store == hosts and len(hosts) == 3

        agree = first_time(agreed, 30, every=POLL)
        store, hosts = _agree(rig, api, "rpweb")
        if result.check(agree is not None, f"store {store} and hosts {hosts} disagree"):
            result.figure("heal to store == hosts, s", agree - healed)
        job = api.job("rpweb")
        after = {(t["index"], t["attempt"], t["unit"]) for t in job["tasks"]}
        result.check(after == before, f"service instances changed: {sorted(after ^ before)}")
        result.check(
            set(hosts) == {u for _, _, u in before},
            f"running on the hosts: {hosts}, before the cut: {before}",
        )
        final = final_state(api, "rpbatch", timeout=60)
        if result.check(final is not None, "rpbatch still active 60 s after the heal"):
            counts = Counter(t["state"] for t in latest(final).values())
            result.figure("batch job", f"{final['state']} {dict(counts)}")
            result.check(
                final["state"] == "done" and counts == {"finished": batch_count},
                f"rpbatch {final['state']} with {dict(counts)}",
            )
        fresh = rig.write(rig.job("rpafter", 10, resources={"cpus": 0.1, "mem": "16MiB"}))
        took, done = rig.timed_cli(ctl.env, "run", str(fresh))
        result.figure("a new 10-task run after the heal, s", took)
        result.check(
            done.returncode == 0,
            f"a new run after the heal: exit {done.returncode}: {done.stderr.strip()[-300:]}",
        )
        rig.cli(ctl.env, "kill", "rpweb")
        if result.failures:
            result.note("controller: " + " | ".join(log_tail(ctl, 40)))
        api.close()
    rig.exactly_once(result, instances("rpbatch", batch_count) | instances("rpafter", 10))
    return result


# -- 6. a host rebooted under its tasks ---------------------------------------------------------


def reboot_host(lab: LabHandle, directory: Path) -> Result:
    """A service (3 instances, one per host), a batch job that may retry (on-failure, 2) and
    one that may not (never) run; the host of a service instance is power-cycled (`meso lab
    restart`). Its tasks are gone within 2 s of its return; the first batch job retries them
    and finishes, the second fails; the service instance is replaced."""
    result = Result("reboot a host with tasks")
    rig = Rig(lab, directory)
    rig.clean_hosts()
    with controller(rig) as ctl:
        api = Api(ctl)
        svc, _retry = _service_and_batch(rig, api, "rrweb", "rrretry", 10, batch_sleep=15)
        once = rig.job(
            "rronce", 5, sleep=15, echo_last=True, strategy="spread", restart={"policy": "never"}
        )
        api.submit(once).raise_for_status()
        wait_for(lambda: states(api.job("rronce")) == {"running": 5}, 30)
        victim = next(t["host"] for t in svc["tasks"] if t["index"] == 0)
        mine = {
            job: [t for t in api.job(job)["tasks"] if t["host"] == victim]
            for job in ("rrweb", "rrretry", "rronce")
        }
        result.figure("victim", victim)
        result.figure("tasks on it", {j: len(ts) for j, ts in mine.items()})
        started = time.monotonic()
        lab.restart(victim)
        back = time.monotonic()
        result.figure("meso lab restart took, s", back - started)

        def victims_gone() -> bool:
            for job, tasks in mine.items():
                now = {(t["index"], t["attempt"]): t["state"] for t in api.job(job)["tasks"]}
                if any(now[(t["index"], t["attempt"])] != "gone" for t in tasks):
                    return False
            return True

        gone = first_time(victims_gone, 30)
        seen = {
            job: sorted(
                {
                    (t["index"], t["attempt"], t["state"], t["reason"])
                    for t in api.job(job)["tasks"]
                    if t["host"] == victim
                }
            )
            for job in mine
        }
        if result.check(
            gone is not None, f"the tasks of {victim} were not gone 30 s after its return: {seen}"
        ):
            result.figure("host back to its tasks gone, s", gone - back)
            result.check(
                gone - back <= 2.0 + 2 * POLL,
                f"gone {gone - back:.2f} s after the host was back (target <= 2 s)",
            )
        result.note(f"states of the victim's attempts: {seen}")

        def replaced() -> bool:
            job = api.job("rrweb")
            now = latest(job)
            store, hosts = _agree(rig, api, "rrweb")
            return (
                all(t["state"] == "running" for t in now.values())
                and len(hosts) == 3
                and store == hosts
                and now[("t", 0)]["attempt"] > 1
            )

        fixed = first_time(replaced, 30, every=POLL)
        store, hosts = _agree(rig, api, "rrweb")
        if result.check(fixed is not None, f"service not replaced: store {store}, hosts {hosts}"):
            result.figure("host back to service replaced, s", fixed - back)
        final = final_state(api, "rrretry", timeout=60)
        if result.check(final is not None, "rrretry still active 60 s after the reboot"):
            counts = Counter(t["state"] for t in latest(final).values())
            retried = [t for t in final["tasks"] if t["attempt"] > 1]
            result.figure("retry job", f"{final['state']} {dict(counts)}, {len(retried)} retried")
            result.check(
                final["state"] == "done" and counts == {"finished": 10},
                f"rrretry {final['state']} with {dict(counts)}",
            )
            result.check(
                len(retried) == len(mine["rrretry"]),
                f"{len(retried)} retried, {len(mine['rrretry'])} were on {victim}",
            )
        final = final_state(api, "rronce", timeout=60)
        if result.check(final is not None, "rronce still active 60 s after the reboot"):
            counts = Counter(t["state"] for t in latest(final).values())
            result.figure("never-restart job", f"{final['state']} {dict(counts)}")
            want = {"finished": 5 - len(mine["rronce"]), "gone": len(mine["rronce"])}
            want = {k: v for k, v in want.items() if v}
            result.check(
                final["state"] == ("failed" if mine["rronce"] else "done") and counts == want,
                f"rronce {final['state']} with {dict(counts)}, expected {want}",
            )

        rig.cli(ctl.env, "kill", "rrweb")
        if result.failures:
            result.note("controller: " + " | ".join(log_tail(ctl, 40, grep=victim)))
        api.close()
    # rrretry: each instance once, but an attempt gone with its host never said its line
    rig.exactly_once(
        result,
        instances("rrretry", 10)
        | {i for i in instances("rronce", 5) if i[2] not in {t["index"] for t in mine["rronce"]}},
    )
    return result


# -- 7. readers racing the writer ---------------------------------------------------------------


def readers_during_runs(lab: LabHandle, directory: Path, runs: int = 3, tasks: int = 60) -> Result:
    """`meso status` and `meso hosts` in a loop (two readers each) while `runs` runs of `tasks`
    tasks launch and finish: through a controller (runs at once), then embedded (runs one
    after another, each the state file's writer). Readers never write over a newer state:
    0 tasks run twice, 0 finished tasks marked lost (in any reader's view, ever)."""
    result = Result(f"status/hosts looping during {runs} + {runs} runs of {tasks} tasks")
    rig = Rig(lab, directory)
    rig.clean_hosts()
    expected: set[Instance] = set()
    seen: dict[str, list[str]] = defaultdict(list)  # unit -> states as readers saw them
    reads = Counter()
    errors: list[str] = []

    def reader(env: dict[str, str], command: str, stop: threading.Event, label: str) -> None:
        while not stop.is_set():
            done = rig.cli(env, command, "-o", "json", timeout=120)
            if done.returncode != 0:
                errors.append(f"meso {command}: exit {done.returncode}: {done.stderr[-200:]}")
                continue
            reads[f"{label} {command}"] += 1
            if command == "status":
                for job in json.loads(done.stdout)["jobs"]:
                    for t in job["tasks"]:
                        states_of = seen[t["unit"]]
                        if not states_of or states_of[-1] != t["state"]:
                            states_of.append(t["state"])

    def phase(
        env: dict[str, str], prefix: str, together: bool
    ) -> list[subprocess.CompletedProcess]:
        stop = threading.Event()
        label = "controller" if "MESO_ADDR" in env else "embedded"
        threads = [
            threading.Thread(target=reader, args=(env, c, stop, label), daemon=True)
            for c in ("status", "status", "hosts", "hosts")
        ]
        for t in threads:
            t.start()
        paths = []
        for i in range(runs):
            name = f"{prefix}{i}"
            expected.update(instances(name, tasks))
            paths.append(rig.write(rig.job(name, tasks, sleep=0.5)))
        outs: list[subprocess.CompletedProcess] = []
        if together:
            procs = [
                subprocess.Popen(
                    [*MESO, "run", str(p)],
                    env={**rig.base_env, **env},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for p in paths
            ]
            for p in procs:
                out, err = p.communicate(timeout=300)
                outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        else:
            outs = [rig.cli(env, "run", str(p)) for p in paths]
        time.sleep(1.0)  # readers see the end too
        stop.set()
        for t in threads:
            t.join(timeout=120)
        return outs

    with controller(rig) as ctl:
        outs = phase(ctl.env, "rq", together=True)
        final = json.loads(rig.cli(ctl.env, "status", "-o", "json").stdout)["jobs"]
    embedded = {"MESO_STATE": str(rig.dir / "embedded.db")}
    outs += phase(embedded, "rqe", together=False)
    final += json.loads(rig.cli(embedded, "status", "-o", "json").stdout)["jobs"]
    result.figure("runs", len(outs))
    result.figure("reads", dict(reads))
    for done in outs:
        result.check(
            done.returncode == 0,
            f"{done.args[-1]}: exit {done.returncode}: {done.stderr.strip()[-300:]}",
        )
    result.check(not errors, f"{len(errors)} reader errors, first: {errors[:1]}")
    backwards = {u: s for u, s in seen.items() if "finished" in s and s[-1] != "finished"}
    lost = {u: s for u, s in seen.items() if "lost" in s}
    result.figure("finished tasks later seen otherwise", len(backwards))
    result.figure("tasks seen lost", len(lost))
    result.check(not backwards, f"finished, then otherwise: {dict(list(backwards.items())[:5])}")
    result.check(not lost, f"seen lost: {dict(list(lost.items())[:5])}")
    for job in final:
        if not job["job"].startswith("rq"):
            continue
        rows = {(t["attempt"], t["state"], t["exit_code"]) for t in job["tasks"]}
        result.check(
            rows == {(1, "finished", 0)} and len(job["tasks"]) == tasks,
            f"{job['job']}: {len(job['tasks'])} rows, {sorted(rows)[:5]}",
        )
    rig.exactly_once(result, expected)
    return result


# -- 8. health checks failing then recovering; a drain under a service and a batch job ---------

FLAKY_SERVER = """\
import http.server, os, time
first = os.environ["MESO_ATTEMPT"] == "1"
blip = float(os.environ["REL_BLIP"])
fail = float(os.environ["REL_FAIL"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        now = time.time()
        bad = first and (blip <= now < blip + float(os.environ["REL_BLIP_FOR"]) or now >= fail)
        self.send_response(500 if bad else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["MESO_PORT0"])), H).serve_forever()
"""

INTERVAL = 2  # seconds between a task's health checks


def health_and_drain(
    lab: LabHandle, directory: Path, blip: float = 2.5, failures: int = 3, deadline: float = 6
) -> Result:
    """A service instance whose HTTP check fails for `blip` seconds (fewer than `failures`
    checks two seconds apart), then for good: not restarted for the blip, restarted after
    `failures` failed checks, its new attempt healthy and left alone. Then a host is drained
    under a 3-instance service and a 10-task batch job: the service never has fewer than 2
    healthy instances on the hosts, none stays on the host, the batch attempts there are
    stopped at the `deadline` and run elsewhere, every batch instance runs exactly once."""
    result = Result("health check failing then recovering; drain with a service and a batch job")
    rig = Rig(lab, directory)
    rig.clean_hosts()
    with controller(rig) as ctl:
        api = Api(ctl)
        t0 = time.time()
        flaky = {
            "job": "rhflaky",
            "type": "service",
            "tasks": [{
                "name": "s",
                "command": ["python3", "-c", FLAKY_SERVER],
                "resources": {**SMALL, "mem": "64MiB", "ports": 1},
                "env": {"REL_BLIP": str(t0 + 10), "REL_BLIP_FOR": str(blip),
                        "REL_FAIL": str(t0 + 24)},
                "health": {"http": "/", "interval": f"{INTERVAL}s", "timeout": "1s",
                           "grace": "2s", "failures": failures},
            }],
        }  # fmt: skip
        up = rig.cli(ctl.env, "run", str(rig.write(flaky)), timeout=60)
        result.check(up.returncode == 0, f"meso run of the checked service: {up.stderr[-300:]}")
        seen: dict[int, set[str]] = defaultdict(set)  # attempt -> health states seen
        appeared: dict[int, float] = {}
        ended: dict[int, dict] = {}
        while time.time() < t0 + 24 + failures * INTERVAL + 16:
            for t in (api.job("rhflaky") or {"tasks": []})["tasks"]:
                seen[t["attempt"]].add(t["health"] or "-")
                appeared.setdefault(t["attempt"], time.time())
                if t["state"] != "running":
                    ended.setdefault(t["attempt"], t)
            time.sleep(POLL)
        result.figure("health states of attempt 1", sorted(seen[1]))
        result.check("unhealthy" in seen[1], "the short failure was never seen as unhealthy")
        restarted = appeared.get(2)
        result.check(
            restarted is not None and restarted >= t0 + 24,
            "restarted during the short failure" if restarted else "never restarted",
        )
        if restarted is not None:
            result.figure("lasting failure to restart, s", restarted - (t0 + 24))
            result.check(
                restarted - (t0 + 24) <= failures * INTERVAL + 6,
                f"restarted {restarted - (t0 + 24):.1f} s after it began to fail "
                f"({failures} checks {INTERVAL} s apart)",
            )
        reason = ended.get(1, {}).get("reason")
        result.figure("attempt 1 ended", reason)
        want = f"unhealthy: {failures} checks failed in a row (HTTP 500)"
        result.check(reason == want, f"attempt 1 ended with {reason!r}, not {want!r}")
        result.figure("attempts", sorted(appeared))
        result.check(sorted(appeared) == [1, 2], f"attempts {sorted(appeared)}, not [1, 2]")
        result.check("healthy" in seen[2], f"attempt 2 never healthy: {sorted(seen[2])}")
        rig.cli(ctl.env, "kill", "rhflaky")

        # the drain
        server = "exec python3 -m http.server $MESO_PORT0 --bind 127.0.0.1"
        web = {
            "job": "rdweb",
            "type": "service",
            "tasks": [{
                "name": "s",
                "count": 3,
                "command": ["/bin/sh", "-c", server],
                "resources": {**SMALL, "mem": "64MiB", "ports": 1},
                "constraints": [{"op": "unique_host"}],
                "health": {"http": "/", "interval": f"{INTERVAL}s", "timeout": "1s",
                           "grace": "5s"},
            }],
        }  # fmt: skip
        up = rig.cli(ctl.env, "run", str(rig.write(web)), timeout=60)
        result.check(up.returncode == 0, f"meso run rdweb: {up.stderr[-300:]}")
        batch = rig.job("rdbatch", 10, sleep=20, echo_last=True, strategy="spread")
        api.submit(batch).raise_for_status()
        wait_for(lambda: states(api.job("rdbatch")) == {"running": 10}, 30)
        target = next(t["host"] for t in api.job("rdweb")["tasks"] if t["state"] == "running")
        on_target = [t for t in api.job("rdbatch")["tasks"] if t["host"] == target]
        result.figure("drained host", target)
        result.figure("batch tasks on it", len(on_target))
        started = time.monotonic()
        drained = rig.cli(ctl.env, "drain", target, "--deadline", f"{deadline:g}s")
        result.check(drained.returncode == 0, f"meso drain: {drained.stderr.strip()[-300:]}")
        lowest_hosts = lowest_healthy = 3
        done_at = None
        while time.monotonic() - started < 90:
            on_hosts = rig.running("rdweb")
            healthy = [
                t
                for t in api.job("rdweb")["tasks"]
                if t["state"] == "running" and t["health"] == "healthy"
            ]
            lowest_hosts = min(lowest_hosts, len(on_hosts))
            lowest_healthy = min(lowest_healthy, len(healthy))
            if (
                api.host_state(target) == "drained"
                and len(healthy) == 3
                and target not in {t["host"] for t in healthy}
            ):
                done_at = time.monotonic()
                break
        result.figure("service instances on the hosts, fewest", lowest_hosts)
        result.figure("healthy service instances, fewest", lowest_healthy)
        result.check(lowest_hosts >= 2, f"{lowest_hosts} instance(s) of 3 on the hosts")
        result.check(lowest_healthy >= 2, f"{lowest_healthy} healthy instance(s) of 3")
        if result.check(done_at is not None, f"{target} not drained with the service moved"):
            result.figure("drain to drained, s", done_at - started)
        final = final_state(api, "rdbatch", timeout=90)
        if result.check(final is not None, "rdbatch still active 90 s after the drain"):
            moved = [t for t in final["tasks"] if t["host"] == target and t["reason"] == "drained"]
            counts = Counter(t["state"] for t in latest(final).values())
            result.figure("batch attempts stopped by the deadline", len(moved))
            result.check(
                len(moved) == len(on_target),
                f"{len(moved)} attempts stopped as drained, {len(on_target)} were on {target}",
            )
            result.check(
                final["state"] == "done" and counts == {"finished": 10},
                f"rdbatch {final['state']} with {dict(counts)}",
            )
        rig.cli(ctl.env, "drain", target, "--undo")
        rig.cli(ctl.env, "kill", "rdweb")
        if result.failures:
            result.note("controller: " + " | ".join(log_tail(ctl, 40)))
        api.close()
    rig.exactly_once(result, instances("rdbatch", 10))
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan
