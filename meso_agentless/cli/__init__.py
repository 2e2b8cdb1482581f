"""The `meso` command line: a thin layer over the package; the core never imports it."""

from __future__ import annotations

import sys

import click

from meso_agentless import __version__
from meso_agentless.cli.jobs import hosts, kill, logs, run, scale, schema, status
from meso_agentless.cli.lab import lab
from meso_agentless.cli.plan import plan
from meso_agentless.errors import MesoError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meso")
def cli() -> None:
    """meso-agentless: share a few large servers between frameworks, over SSH and systemd."""


cli.add_command(lab)
cli.add_command(plan)
for command in (run, status, logs, kill, scale, hosts, schema):
    cli.add_command(command)


def main() -> None:
    """Run the CLI; every error is one line on stderr with a meaningful exit code."""
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
    sys.exit(code if isinstance(code, int) else 0)
