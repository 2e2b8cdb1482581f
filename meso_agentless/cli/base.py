"""What every command shares: one-line errors with exit codes, progress, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console

from meso_agentless.errors import MesoError

OUTPUT_OPTION = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output format.",
)  # fmt: skip


class MesoGroup(click.Group):
    """A click group that prints a MesoError as one line and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MesoError as exc:
            click.echo(f"meso: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("meso: interrupted", err=True)
            ctx.exit(130)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def progress() -> Iterator[Callable[[str], None]]:
    """A spinner with the latest message on a terminal; plain lines otherwise.

    Messages that start with "debootstrap: " (one per package) only move the spinner.
    """
    console = stderr_console()
    if not console.is_terminal:
        yield lambda message: print(message, file=sys.stderr, flush=True)
        return
    with console.status("starting") as status:

        def report(message: str) -> None:
            status.update(message)
            if not message.startswith("debootstrap: "):
                console.log(message)

        yield report


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))
