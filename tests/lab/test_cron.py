"""Cron jobs on five real nspawn hosts with a real `meso controller`: runs fire on time (both
syntaxes), a controller stopped for 60 s misses nothing, forbid skips and replace replaces, a
host cut across fire times never makes a scheduled time run twice, bad schedules exit 2.

Runs are counted on the hosts themselves (each host's record of every firing) as well as in
the controller's store. Lab `mcron` (or $MESO_TEST_CRON_LAB), five hosts, up for the module.
"""

import itertools
import json
import os
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from meso_agentless.node import nodecmd
from meso_agentless.testing.controller import running_controller, start_controller
from meso_agentless.testing.lab import running_lab
from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.lab

LAB = os.environ.get("MESO_TEST_CRON_LAB", "mcron")
STAMP = '["/bin/sh", "-c", "echo start $(date +%s.%N) on $MESO_HOST"]'
FIGURES = Path(os.environ.get("MESO_CRON_FIGURES", "/tmp/meso-cron-figures.json"))


@pytest.fixture(scope="module")
def cron_lab():
    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    with running_lab(LAB, hosts=5) as lab:
        yield lab


@pytest.fixture
def base_env(cron_lab):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    return {**env, "MESO_INVENTORY": str(cron_lab.inventory)}


def job_file(tmp_path, name, schedule="*:*:0/10", command=STAMP, extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"job: {name}\ntype: cron\nschedule: {json.dumps(schedule)}\n{extra}"
        f"tasks:\n  - name: t\n    command: {command}\n"
        "    resources: {cpus: 0.2, mem: 64MiB}\n"
    )
    return path


def view(ctl, name):
    return httpx.get(f"{ctl.url}/v1/jobs/{name}", headers=ctl.headers, timeout=30).json()


def host_records(lab, job):
    """Every firing of the job's timers as each host recorded it: host -> records."""
    out = {}
    for host in lab.hosts:
        done = lab.run(host.name, ["sh", "-c", f"cat /var/lib/meso-node/runs/meso-{job}_*.jsonl "
                                   "2>/dev/null || true"])  # fmt: skip
        out[host.name] = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return out


def started_per_scheduled_time(lab, job):
    count = Counter()
    for records in host_records(lab, job).values():
        for r in records:
            if r.get("state") == "started" and r.get("kind") == "schedule":
                count[r["scheduled"]] += 1
    return count


def meso_timers(lab):
    """Meso timers still loaded on any host."""
    found = []
    for host in lab.hosts:
        done = lab.run(host.name, ["systemctl", "list-units", "--all", "--plain", "--no-legend",
                                   "--type=timer", "meso-*"])  # fmt: skip
        found += [f"{host.name}:{line.split()[0]}" for line in done.stdout.splitlines() if line]
    return found


def record_figures(key, value):
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[key] = value
    FIGURES.write_text(json.dumps(figures, indent=1))


def test_runs_fire_on_time_with_both_syntaxes(cron_lab, base_env, tmp_path):
    with running_controller(cron_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        done = cli(env, "run", str(job_file(tmp_path, "tick")))
        assert done.returncode == 0, done.stderr
        assert "cron timers placed" in done.stdout
        minute = cli(env, "run", str(job_file(tmp_path, "minute", schedule="* * * * *")))
        assert minute.returncode == 0, minute.stderr
        every_minute = view(ctl, "minute")
        holder = every_minute["cron"]["timers"][0]["host"]
        argv = ["env", "TZ=UTC", "systemctl", "show", "-P", "NextElapseUSecRealtime",
                "meso-minute_t_0_1.timer"]  # fmt: skip
        shown = cron_lab.run(holder, argv)
        next_minute = (time.time() // 60 + 1) * 60  # what croniter says of "* * * * *"
        assert nodecmd._unix(shown.stdout.strip()) == next_minute, shown.stdout
        assert every_minute["next"] == next_minute

        def finished():
            done = [r for r in view(ctl, "tick")["runs"] if r["state"] == "finished"]
            return done if len(done) >= 6 else None

        runs = wait_for(finished, timeout=120, every=2)
        delays = []
        for run in runs:
            assert run["kind"] == "schedule" and run["scheduled"] % 10 == 0
            log = cli(env, "logs", "tick", "--run", run["unit"])
            assert log.returncode == 0, log.stderr
            started = float(log.stdout.split()[1])  # "start SECONDS on HOST"
            delays.append(started - run["scheduled"])
        assert max(delays) < 1.0, delays
        assert min(delays) >= 0.0, delays
        assert max(started_per_scheduled_time(cron_lab, "tick").values()) == 1
        status = cli(env, "status", "tick")
        assert "timer t[0] on" in status.stdout and "next" in status.stdout
        trigger = cli(env, "cron", "trigger", "tick")
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr
        record_figures("fire_delay_seconds", sorted(round(d, 4) for d in delays))
        for name in ("tick", "minute"):
            assert cli(env, "kill", name).returncode in (0, 1)
        wait_for(lambda: not meso_timers(cron_lab), timeout=30)


def test_a_controller_stopped_for_60_s_misses_nothing(cron_lab, base_env, tmp_path):
    directory = tmp_path / "ctl"
    ctl = start_controller(cron_lab.inventory, directory)
    try:
        env = {**base_env, **ctl.env}
        path = job_file(tmp_path, "outage")  # the cron default lease (5 min) rides it out
        assert cli(env, "run", str(path)).returncode == 0
        wait_for(lambda: sum(r["state"] == "finished" for r in view(ctl, "outage")["runs"]) >= 2,
                 timeout=60, every=1)  # fmt: skip
        assert ctl.stop() == 0
        stopped = time.time()
        time.sleep(60)
        restarted = time.time()
        ctl = start_controller(cron_lab.inventory, directory)
        env = {**base_env, **ctl.env}

        def outage_runs():
            runs = view(ctl, "outage")["runs"]
            during = [r for r in runs if stopped < r["scheduled"] < restarted]
            return runs if len(during) >= 5 and all(
                r["state"] == "finished" for r in during) else None  # fmt: skip

        runs = wait_for(outage_runs, timeout=60, every=1)
        collected = time.time() - restarted
        scheduled = sorted(r["scheduled"] for r in runs if r["kind"] == "schedule")
        assert len(scheduled) == len(set(scheduled))  # none counted twice
        first, last = scheduled[0], scheduled[-1]
        assert scheduled == list(range(int(first), int(last) + 10, 10))  # none missing
        on_hosts = started_per_scheduled_time(cron_lab, "outage")
        assert set(scheduled) <= set(on_hosts) and max(on_hosts.values()) == 1
        during = [s for s in scheduled if stopped < s < restarted]
        figures = {
            "runs_during_outage": len(during),
            "missing": 0,
            "twice": 0,
            "collected_after_restart_s": round(collected, 1),
        }
        record_figures("outage_60s", figures)
        assert cli(env, "kill", "outage").returncode in (0, 1)
    finally:
        ctl.stop()


def test_forbid_skips_and_replace_replaces(cron_lab, base_env, tmp_path):
    slow = '["sleep", "25"]'
    with running_controller(cron_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        for name, how in (("slowf", "forbid"), ("slowr", "replace")):
            path = job_file(tmp_path, name, command=slow, extra=f"concurrency: {how}\n")
            assert cli(env, "run", str(path)).returncode == 0

        def seen(name, state, reason):
            return any(r["state"] == state and reason in (r["reason"] or "")
                       for r in view(ctl, name)["runs"])  # fmt: skip

        wait_for(lambda: seen("slowf", "skipped", "forbid: meso-slowf_t_0_1-r"), timeout=90)
        wait_for(lambda: seen("slowr", "killed", "replaced by meso-slowr_t_0_1-r"), timeout=90)
        # forbid: never two runs of slowf at once, on its host's own record
        records = [r for rs in host_records(cron_lab, "slowf").values() for r in rs]
        started = sorted(r["fired"] for r in records if r.get("state") == "started")
        assert all(b - a >= 20 for a, b in itertools.pairwise(started))
        for name in ("slowf", "slowr"):
            assert cli(env, "kill", name).returncode in (0, 1)


def test_a_host_cut_across_fire_times_never_runs_one_twice(cron_lab, base_env, tmp_path):
    with running_controller(cron_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        path = job_file(tmp_path, "moving", extra="disconnect: {replace_after: 15s}\n")
        assert cli(env, "run", str(path)).returncode == 0
        wait_for(lambda: sum(r["state"] == "finished" for r in view(ctl, "moving")["runs"]) >= 2,
                 timeout=60, every=1)  # fmt: skip
        holder = view(ctl, "moving")["cron"]["timers"][0]["host"]
        cron_lab.cut(holder)
        try:
            moved = wait_for(lambda: next((t["host"] for t in view(ctl, "moving")["cron"]["timers"]
                                          if t["host"] != holder), None),
                             timeout=90, every=1)  # fmt: skip
            time.sleep(12)  # fire times pass with the first host still cut
        finally:
            cron_lab.heal(holder)
        wait_for(lambda: not [t for t in meso_timers(cron_lab) if t.startswith(f"{holder}:")],
                 timeout=60)  # the stale timer is removed  # fmt: skip
        time.sleep(12)
        records = host_records(cron_lab, "moving")
        lapsed = [r for r in records[holder] if "lease lapsed" in (r.get("reason") or "")]
        assert lapsed, "the cut host went on firing past its lease"
        per_time = started_per_scheduled_time(cron_lab, "moving")
        assert max(per_time.values()) == 1, per_time
        on_hosts = {r["run"] for rs in records.values() for r in rs if r.get("state") == "started"}

        def all_stored():  # what the hosts ran, the cut one too, is in the controller's history
            runs = view(ctl, "moving")["runs"]
            return {r["unit"] for r in runs if r["state"] != "skipped"} >= on_hosts

        wait_for(all_stored, timeout=30)
        record_figures("host_cut", {"holder": holder, "moved_to": moved,
                                    "runs_per_scheduled_time_max": max(per_time.values()),
                                    "skipped_past_lease_on_cut_host": len(lapsed)})  # fmt: skip
        assert cli(env, "kill", "moving").returncode in (0, 1)
        wait_for(lambda: not meso_timers(cron_lab), timeout=30)


def test_a_rebooted_holder_s_timer_is_placed_again_at_once(cron_lab, base_env, tmp_path):
    with running_controller(cron_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        path = job_file(tmp_path, "reboot", extra="disconnect: {replace_after: 60s}\n")
        assert cli(env, "run", str(path)).returncode == 0
        wait_for(lambda: sum(r["state"] == "finished" for r in view(ctl, "reboot")["runs"]) >= 1,
                 timeout=60, every=1)  # fmt: skip
        holder = view(ctl, "reboot")["cron"]["timers"][0]["host"]
        rebooted = time.time()
        cron_lab.restart(holder)
        placed = wait_for(lambda: next((t for t in view(ctl, "reboot")["cron"]["timers"]
                                        if t["unit"] == "meso-reboot_t_0_2"
                                        and t["state"] == "running"), None),
                          timeout=60, every=1)  # fmt: skip
        took = time.time() - rebooted
        assert took < 30  # not the 60 s of replace_after: a new boot means its timer is gone
        time.sleep(22)  # two fire times on the new holder (the host back up may be the one)
        per_time = started_per_scheduled_time(cron_lab, "reboot")
        assert max(per_time.values()) == 1, per_time
        assert meso_timers(cron_lab) == [f"{placed['host']}:meso-reboot_t_0_2.timer"]
        assert any(r["unit"].startswith("meso-reboot_t_0_2-r") and r["state"] == "finished"
                   for r in view(ctl, "reboot")["runs"])  # fmt: skip
        record_figures("reboot", {"moved_after_s": round(took, 1)})
        assert cli(env, "kill", "reboot").returncode in (0, 1)
        wait_for(lambda: not meso_timers(cron_lab), timeout=30)


def test_drain_moves_the_timer(cron_lab, base_env, tmp_path):
    with running_controller(cron_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        assert cli(env, "run", str(job_file(tmp_path, "drained"))).returncode == 0
        wait_for(lambda: any(r["state"] == "finished" for r in view(ctl, "drained")["runs"]),
                 timeout=60, every=1)  # fmt: skip
        holder = view(ctl, "drained")["cron"]["timers"][0]["host"]
        try:
            assert cli(env, "drain", holder).returncode == 0
            moved = wait_for(lambda: next((t["host"] for t in view(ctl, "drained")["cron"]["timers"]
                                          if t["host"] != holder and t["state"] == "running"),
                                         None), timeout=30, every=1)  # fmt: skip
            assert meso_timers(cron_lab) == [f"{moved}:meso-drained_t_0_2.timer"]
            time.sleep(12)
            assert max(started_per_scheduled_time(cron_lab, "drained").values()) == 1
        finally:
            cli(env, "drain", holder, "--undo")
        assert cli(env, "kill", "drained").returncode in (0, 1)


def test_bad_schedules_exit_2_and_store_nothing(cron_lab, base_env, tmp_path):
    with running_controller(cron_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        for schedule, reason in (("0 25 * * *", "hour 25 out of range"),
                                 ("*-*-* 25:00", "not a systemd calendar expression")):  # fmt: skip
            done = cli(env, "run", str(job_file(tmp_path, "bad", schedule=schedule)))
            assert done.returncode == 2 and reason in done.stderr, done.stderr
        listed = httpx.get(f"{ctl.url}/v1/jobs", headers=ctl.headers, timeout=30).json()
        assert listed["jobs"] == []
