"""A task's end is seen when it happens, not at the host's next sample: each host's node command
`watch` tells the controller when systemd says a meso unit ended, and the controller samples that
host at once. The controller here samples every minute, so a `meso run` that ends within seconds
was told by a watch; after the watch is killed, systemd re-executes and drops its connection, or
the host reboots, the controller opens a new one. A controller watches unless `--no-watch`."""

import os

import pytest

from meso_agentless.testing.controller import running_controller
from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.lab

# no --watch: a controller watches unless told --no-watch
EVERY_MINUTE = ["--interval", "60", "--suspect-after", "120", "--unreachable-after", "180"]
BEFORE_A_ROUND = 45  # seconds: well before the next round, however loaded the machine
WATCHES = "for p in $(pgrep -x python3); do grep -qa watch /proc/$p/cmdline && echo $p; done"


@pytest.fixture
def base_env(meso_lab):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    return {**env, "MESO_INVENTORY": str(meso_lab.inventory)}


def watches(lab) -> dict[str, list[str]]:
    """host -> the pids of its node commands that watch."""
    return {h.name: lab.run(h.name, ["sh", "-c", WATCHES]).stdout.split() for h in lab.hosts}


def one_watch_each(lab):
    found = watches(lab)
    return found if all(len(pids) == 1 for pids in found.values()) else None


def run_short_job(env, tmp_path) -> None:
    job = tmp_path / "short.yaml"
    job.write_text("job: short\ntasks:\n  - name: t\n    count: 3\n    command: [sleep, '1']\n"
                   "    resources: {cpus: 0.1, mem: 16MiB}\n")  # fmt: skip
    done = cli(env, "run", "--again", str(job), timeout=BEFORE_A_ROUND)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(": finished (exit 0)") == 3, done.stderr


def test_ends_are_seen_at_once_and_a_killed_or_dropped_watch_is_opened_again(
    meso_lab, base_env, tmp_path
):
    with running_controller(meso_lab.inventory, tmp_path / "ctl", *EVERY_MINUTE) as ctl:
        env = {**base_env, **ctl.env}
        before = wait_for(lambda: one_watch_each(meso_lab), timeout=30)
        run_short_job(env, tmp_path)

        host = meso_lab.hosts[0].name  # its watch killed: a new one comes, ends seen again
        meso_lab.run(host, ["kill", "-9", before[host][0]])
        after = wait_for(lambda: one_watch_each(meso_lab), timeout=30)
        assert after[host] != before[host]
        run_short_job(env, tmp_path)

        # systemd re-executes: every watch's connection to it ends, and new ones are opened
        for h in meso_lab.hosts:
            meso_lab.run(h.name, ["systemctl", "daemon-reexec"])
        again = wait_for(lambda: (w := one_watch_each(meso_lab)) and all(
            w[h] != after[h] for h in w) and w, timeout=60)  # fmt: skip
        assert again
        run_short_job(env, tmp_path)

        host = meso_lab.hosts[1].name  # a reboot: its watch comes back once it answers
        meso_lab.restart(host)
        rebooted = wait_for(lambda: (w := one_watch_each(meso_lab)) and w[host] != again[host]
                            and w, timeout=90)  # fmt: skip
        assert rebooted
        run_short_job(env, tmp_path)
