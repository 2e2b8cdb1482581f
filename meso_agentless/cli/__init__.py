"""The `meso` command line: a thin layer over the package; the core never imports it.

Commands are imported only when they run (a command's module pulls in what it needs), so
`meso --help` and a client command through a controller start fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from meso_agentless import __version__
from meso_agentless.errors import MesoError

# name -> (module, attribute, the one line `meso --help` shows)
COMMANDS = {
    "controller": ("controller", "controller", "Run the controller and its HTTP API."),
    "run": ("jobs", "run", "Run JOB_FILE on the cluster and follow it."),
    "status": ("jobs", "status", "Each task instance of JOB (or every job)."),
    "logs": ("jobs", "logs", "The journal of JOB's tasks."),
    "cron": ("jobs", "cron", "Cron jobs: `meso cron trigger JOB` runs one now."),
    "kill": ("jobs", "kill", "Stop every task of JOB on every host."),
    "scale": ("jobs", "scale", "Set TASK of JOB to COUNT instances."),
    "hosts": ("jobs", "hosts", "Each host: state, capacity, allocated, free, load."),
    "drain": ("jobs", "drain", "Move everything off a host (or --undo)."),
    "cluster": ("jobs", "cluster", "Hosts by state; whether unreachable hosts' tasks move."),
    "gc": ("jobs", "gc", "Stop the meso units on the hosts that no job claims."),
    "frameworks": ("jobs", "frameworks", "Each framework: weight, quota, share (and `set`)."),
    "plan": ("plan", "plan", "Where jobs would go, and why what does not fit does not."),
    "deployment": ("deployments", "deployment", "A service's deployment: status, promote, fail."),
    "history": ("deployments", "history", "Every version of JOB's spec, with its changes."),
    "revert": ("deployments", "revert", "Run an earlier version of JOB again."),
    "queue": ("queue", "queue", "Pending tasks in placing order, why each waits; shares."),
    "explain": ("queue", "explain", "Why JOB [TASK] is pending: every host, one line each."),
    "schema": ("jobs", "schema", "Print the job file's JSON Schema."),
    "lab": ("lab", "lab", "Lab hosts on this machine (nspawn containers or QEMU guests)."),
    "sim": ("sim", "sim", "Replay a workload trace through the allocator: shared vs static."),
}  # fmt: skip


class LazyGroup(click.Group):
    """Loads a command's module when the command is used, not to list it."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"meso_agentless.cli.{module}"), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, _, line) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meso")
def cli() -> None:
    """meso-agentless: share a few large servers between frameworks, over SSH and systemd.

    With MESO_ADDR (or `controller:` in the config file) every command goes through that
    controller's API; without, it runs an embedded controller on the state file.
    """


def main() -> None:
    """Run the CLI; every error is one line on stderr with a meaningful exit code."""
    # paramiko imports invoke (a third of a command's start: its vendored yaml, unittest.mock)
    # only to run the `Match exec` lines of an ssh_config, which meso never reads: a `meso`
    # process goes without it (a library user's process keeps it)
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    try:
        code = cli.main(prog_name="meso", standalone_mode=False)
    except MesoError as exc:
        click.echo(f"meso: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "meso"
        click.echo(f"{command}: error: {exc.format_message()} (see --help)", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("meso: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    sys.exit(code if isinstance(code, int) else 0)
