"""The node command's cron timers without a host: the timer's systemd-run line, what a firing
decides (lease, policy, concurrency, admission) and records, and what `list` reports of runs.
systemd is replaced by recorders; the lab tests run the same code on real hosts."""

import subprocess

import pytest

from meso_agentless.node import nodecmd

UNIT = "meso-tick_t_0_1"
OWNER = "abc123"
REQUEST = {"unit": UNIT, "argv": ["true"], "cpus": 500, "mem": 64 << 20,
           "description": "meso tick/t[0] attempt 1 [state:abc123]",
           "schedule": ["*:*:0/10 UTC"], "concurrency": "forbid", "lease_sec": 30,
           "owner": OWNER}  # fmt: skip


def plan(**changes):
    request = {**REQUEST, **changes}
    return nodecmd.plan_timer(request, nodecmd.parse_policy({}), "/run/meso-node/nodecmd-x.py",
                              "/usr/bin/python3", lookup_user=lambda _u: None)  # fmt: skip


def test_a_timer_fires_the_node_command_to_the_millisecond():
    argv, spec, limits = plan()
    assert argv[:4] == ["systemd-run", f"--unit={UNIT}", "--quiet", "--on-calendar=*:*:0/10 UTC"]
    assert "--timer-property=AccuracySec=1ms" in argv
    assert "--timer-property=Persistent=no" in argv
    assert argv[-5:] == ["--", "/usr/bin/python3", "/run/meso-node/nodecmd-x.py", "fire", UNIT]
    assert spec["concurrency"] == "forbid" and spec["lease_sec"] == 30 and spec["owner"] == OWNER
    assert "schedule" not in spec["run"] and spec["run"]["argv"] == ["true"]
    assert limits["cpus"] == 500
    two, _, _ = plan(schedule=["*-*-1 00:00:00 UTC", "Mon *-*-* 00:00:00 UTC"])
    assert "--timer-property=OnCalendar=Mon *-*-* 00:00:00 UTC" in two


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"schedule": "daily"}, "schedule: must be a list"),
     ({"schedule": ["daily\nExecStart=/bin/sh"]}, "schedule: must be a list"),
     ({"concurrency": "sometimes"}, "concurrency: forbid, allow or replace"),
     ({"owner": "../x"}, "owner: must be a state's identity"),
     ({"lease_sec": 0}, "lease_sec: 0 is not a whole number"),
     ({"restart": "always"}, "restart: the runs of a cron job are not restarted"),
     ({"unit": "sshd"}, "unit: 'sshd' is not a meso unit name"),
     ({"sandbox": {"dynamic_user": False}}, "sandbox.dynamic_user: false without a user"),
     ({"bogus": 1}, "bogus: unknown field")],
)  # fmt: skip
def test_a_timer_is_refused_like_a_launch(changes, message):
    with pytest.raises(nodecmd.RequestError, match=message):
        plan(**changes)


def test_timer_state_from_systemctl_show():
    props = {"Id": f"{UNIT}.timer", "LoadState": "loaded", "ActiveState": "active",
             "SubState": "waiting", "NextElapseUSecRealtime": "@1700000010",
             "LastTriggerUSec": "@1700000000", "Description": "meso x [state:abc123]"}  # fmt: skip
    state = nodecmd.timer_state(props)
    assert (state["state"], state["kind"], state["next"], state["last"]) == (
        "running", "timer", 1700000010.0, 1700000000.0)  # fmt: skip
    assert nodecmd.timer_state({**props, "LoadState": "not-found"})["state"] == "unknown"
    assert nodecmd.timer_state({**props, "LastTriggerUSec": "n/a"})["last"] is None
    # systemd 252 shows timers' times as dates whatever --timestamp says (the node sets TZ=UTC)
    shown = {**props, "LastTriggerUSec": "Thu 2026-11-26 12:15:00 UTC"}
    assert nodecmd.timer_state(shown)["last"] == 1795695300.0


class Host:
    """A host's systemd, recorded: runs started, units stopped, what is loaded."""

    def __init__(self, monkeypatch, tmp_path):
        self.started: list[list[str]] = []
        self.stopped: list[list[str]] = []
        self.running: list[dict] = []  # run units that hold resources
        self.held: list[dict] = []  # task units that hold resources
        self.boottime = 1000.0
        state = tmp_path / "run"
        monkeypatch.setattr(nodecmd, "STATE_DIR", str(state))
        monkeypatch.setattr(nodecmd, "LEDGER", str(state / "ledger.json"))
        monkeypatch.setattr(nodecmd, "TIMERS_DIR", str(state / "timers"))
        monkeypatch.setattr(nodecmd, "RUNS_DIR", str(tmp_path / "runs"))
        monkeypatch.setattr(nodecmd, "_boottime", lambda: self.boottime)
        monkeypatch.setattr(nodecmd, "load_policy", lambda: (nodecmd.parse_policy({}), "test"))
        monkeypatch.setattr(nodecmd, "measure", lambda: {"cpus": 2000, "mem": 4 << 30})
        monkeypatch.setattr(nodecmd, "systemd_version", lambda bus=None: 252)
        monkeypatch.setattr(nodecmd, "_show_timers", lambda units: [{
            "Id": f"{UNIT}.timer", "LoadState": "loaded", "ActiveState": "active",
            "LastTriggerUSec": "@1700000010"}])  # fmt: skip
        monkeypatch.setattr(nodecmd, "_runs_of", lambda unit: list(self.running))
        monkeypatch.setattr(nodecmd, "held_units", lambda: self.held + self.running)
        monkeypatch.setattr(nodecmd, "_run", lambda argv: self.stopped.append(argv) or "")
        monkeypatch.setattr(nodecmd, "status", lambda request, session=None, runs=True: {
            "unit": request["unit"], "state": "unknown"})  # fmt: skip

        def systemd_run(argv):
            self.started.append(argv)
            return subprocess.CompletedProcess(argv, 0, "", "")

        monkeypatch.setattr(nodecmd, "_systemd_run", systemd_run)
        _, spec, _ = plan()
        nodecmd._write_json(f"{state}/timers/{UNIT}.json", {**spec, "layers": []})


@pytest.fixture
def host(monkeypatch, tmp_path):
    return Host(monkeypatch, tmp_path)


def test_without_a_lease_a_timer_does_not_fire(host):
    record = nodecmd.fire(UNIT)
    assert record["state"] == "skipped" and record["reason"].startswith("lease lapsed")
    assert "vouched for this timer here never" in record["reason"]
    assert host.started == []


def test_a_firing_runs_under_the_same_sandbox_and_limits_as_any_task(host):
    nodecmd.renew_leases({"owner": OWNER, "units": [UNIT]})
    record = nodecmd.fire(UNIT)
    assert record == {"seq": 1, "timer": UNIT, "run": f"{UNIT}-r1700000010", "kind": "schedule",
                      "scheduled": 1700000010, "fired": record["fired"],
                      "state": "started"}  # fmt: skip
    [argv] = host.started
    assert f"--unit={UNIT}-r1700000010" in argv
    for prop in ("--property=DynamicUser=yes", "--property=NoNewPrivileges=yes",
                 "--property=MemoryMax=67108864", "--property=CPUQuota=50%",
                 "--property=RemainAfterExit=yes"):  # fmt: skip
        assert prop in argv
    # past its lease (no sample renewed it for longer than lease_sec), it skips
    host.boottime += 31
    later = nodecmd.fire(UNIT)
    assert later["state"] == "skipped" and "31 s ago (lease 30 s)" in later["reason"]


def test_forbid_skips_and_replace_stops_the_running_one(host):
    nodecmd.renew_leases({"owner": OWNER, "units": [UNIT]})
    host.running = [{"unit": f"{UNIT}-r1700000000.service", "state": "running",
                     "millicpus": 500, "memory_max": 64 << 20}]  # fmt: skip
    record = nodecmd.fire(UNIT)
    assert record["reason"] == f"forbid: {UNIT}-r1700000000 is still running"
    path = f"{nodecmd.TIMERS_DIR}/{UNIT}.json"
    with open(path) as f:
        spec = nodecmd.json.load(f)
    nodecmd._write_json(path, {**spec, "concurrency": "replace"})
    started = nodecmd.fire(UNIT)
    assert started["state"] == "started"
    assert ["systemctl", "stop", f"{UNIT}-r1700000000.service"] in host.stopped
    killed = [r for r in nodecmd.read_records(UNIT) if r["state"] == "killed"]
    assert killed[0]["reason"] == f"replaced by {UNIT}-r1700000010"


def test_admission_at_fire_time_skips_what_does_not_fit(host):
    nodecmd.renew_leases({"owner": OWNER, "units": [UNIT]})
    host.held = [{"unit": "meso-big_t_0_1.service", "state": "running", "millicpus": 1800,
                  "memory_max": 1 << 30}]  # fmt: skip
    nodecmd._write_ledger(host.held)
    record = nodecmd.fire(UNIT)
    assert record["state"] == "skipped"
    assert record["reason"].startswith("admission: cpus would exceed the host's capacity")
    assert host.started == []


def test_a_trigger_needs_no_lease_and_makes_a_run_of_its_own(host):
    record = nodecmd.trigger({"unit": UNIT})
    assert record["kind"] == "trigger" and record["scheduled"] is None
    assert record["run"].startswith(f"{UNIT}-t") and record["state"] == "started"
    with pytest.raises(nodecmd.RequestError, match="not a cron timer on this host"):
        nodecmd.trigger({"unit": "meso-other_t_0_1"})


def test_list_reports_new_records_and_runs_still_loaded(host):
    nodecmd.renew_leases({"owner": OWNER, "units": [UNIT]})
    nodecmd.fire(UNIT)
    run = f"{UNIT}-r1700000010"
    loaded = [{"unit": f"{run}.service", "state": "finished", "exit_code": 0, "signal": None,
               "reason": None, "millicpus": 500, "memory_max": 64 << 20}]  # fmt: skip
    [report] = nodecmd.run_reports(loaded, {})
    assert (report["run"], report["state"], report["exit_code"], report["loaded"]) == (
        run, "finished", 0, True)  # fmt: skip
    assert nodecmd.run_reports(loaded, {UNIT: 1}) == [report]  # loaded: still told
    assert nodecmd.run_reports([], {UNIT: 1}) == []  # stored and unloaded: not again
    [gone] = nodecmd.run_reports([], {})  # started, unit not there: the host rebooted
    assert gone["state"] == "gone" and gone["loaded"] is False
    with pytest.raises(nodecmd.RequestError, match="unit: 'x' is not a meso unit name"):
        nodecmd.list_units({"after": {"x": 1}})


def test_a_firing_keeps_the_connection_s_tightening(host):
    """The policy layer the controller's connection sent when the timer was made applies to
    every firing (stored parsed, applied as it was)."""
    path = f"{nodecmd.TIMERS_DIR}/{UNIT}.json"
    with open(path) as f:
        spec = nodecmd.json.load(f)
    layer = nodecmd.parse_policy({"sandbox_minimum": {"protect_system": "strict"},
                                  "default_limits": {"cpus": "50m"}}, partial=True)  # fmt: skip
    nodecmd._write_json(path, {**spec, "layers": [layer]})
    nodecmd.renew_leases({"owner": OWNER, "units": [UNIT]})
    assert nodecmd.fire(UNIT)["state"] == "started"
    [argv] = host.started
    assert "--property=ProtectSystem=strict" in argv
    assert "--property=CPUQuota=50%" in argv  # the request's own 500m, not the default


def test_a_sample_asked_before_a_launch_cannot_take_the_new_timer_s_lease(host):
    launched = {"renewed": {}, "launched": {UNIT: host.boottime - 5}}
    nodecmd._write_json(nodecmd._lease_file(OWNER), launched)
    nodecmd.renew_leases({"owner": OWNER, "units": []})  # the controller's list before it
    assert nodecmd.lease_age(OWNER, UNIT) == 5
    assert nodecmd.fire(UNIT)["state"] == "started"
    host.boottime += 30  # no sample ever renews it: it lapses like any lease
    assert nodecmd.fire(UNIT)["state"] == "skipped"


def test_records_of_a_timer_long_gone_are_cleaned_up(host):
    nodecmd.renew_leases({"owner": OWNER, "units": [UNIT]})
    nodecmd.fire(UNIT)
    old = "meso-gone_t_0_1"
    nodecmd._record(old, {"run": f"{old}-r1", "state": "started"})
    week_ago = nodecmd.time.time() - nodecmd.RECORDS_KEEP - 60
    nodecmd.os.utime(nodecmd._records_path(old), (week_ago, week_ago))
    reports = nodecmd.run_reports([], {}, timers={UNIT})
    assert {r["timer"] for r in reports} == {UNIT}
    assert not nodecmd.os.path.exists(nodecmd._records_path(old))
    assert nodecmd.read_records(UNIT)  # a loaded timer's records stay, however old


def test_a_run_s_unit_says_when_it_started_and_ended():
    props = {"Id": f"{UNIT}-r1700000010.service", "LoadState": "loaded", "ActiveState": "active",
             "SubState": "exited", "ExecMainCode": "1", "ExecMainStatus": "0",
             "ExecMainStartTimestamp": "@1700000010", "ExecMainExitTimestamp": "@1700000012",
             "CPUQuotaPerSecUSec": "500ms", "MemoryMax": "67108864"}  # fmt: skip
    state = nodecmd.run_state(props)
    assert (state["state"], state["exit_code"], state["start"], state["end"]) == (
        "finished", 0, 1700000010.0, 1700000012.0)  # fmt: skip
    assert (state["millicpus"], state["memory_max"]) == (500, 64 << 20)


def test_the_node_command_reads_systemd_times_in_utc(monkeypatch, capsys):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert nodecmd.main(["no-such-verb"]) == 1  # refused, as one JSON line
    capsys.readouterr()
    assert nodecmd.os.environ["TZ"] == "UTC"  # what systemctl then prints, _unix reads
