"""The `meso` command line: a thin layer over the package; the core never imports it."""

from __future__ import annotations

import click

from meso_agentless import __version__
from meso_agentless.cli.base import MesoGroup
from meso_agentless.cli.lab import lab


@click.group(cls=MesoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meso")
def cli() -> None:
    """meso-agentless: share a few large servers between frameworks, over SSH and systemd."""


cli.add_command(lab)


def main() -> None:
    cli(prog_name="meso")
