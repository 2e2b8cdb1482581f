"""What the lab tests that drive the CLI and a controller share."""

import subprocess
import sys
import time

MESO = [sys.executable, "-m", "meso_agentless"]


def cli(env, *args, timeout=180):
    """Run `meso ARGS` with `env`; the finished process (never raises on its exit code)."""
    return subprocess.run([*MESO, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)  # fmt: skip


def wait_for(predicate, timeout=60.0, every=0.5):
    """The first true value of predicate(), asked every `every` seconds; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def units(lab):
    """Every meso unit that runs, on every host: {unit: host}."""
    found = {}
    for host in lab.hosts:
        listed = lab.run(host.name, ["systemctl", "list-units", "--no-legend", "--plain",
                                     "--state=running", "meso-*"]).stdout  # fmt: skip
        for line in listed.splitlines():
            found[line.split()[0].removesuffix(".service")] = host.name
    return found


NODE_COMMANDS = ("for p in $(pgrep -x python3); do grep -qa serve /proc/$p/cmdline && kill -$0 $p;"
                 " done")  # fmt: skip


def signal_node_commands(lab, host: str, signal: str) -> None:
    """Send `signal` (STOP, CONT) to every warm node command on `host`: STOP makes the host too
    slow to answer, or holds a request unread until CONT, as a cut connection delivers it late."""
    lab.run(host, ["sh", "-c", NODE_COMMANDS, signal])
