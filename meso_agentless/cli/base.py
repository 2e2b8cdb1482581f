"""What every command shares: progress, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console

OUTPUT_OPTION = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output format.",
)  # fmt: skip


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def progress() -> Iterator[Callable[[str], None]]:
    """A spinner with the latest message on a terminal; plain lines otherwise.

    Messages that start with "debootstrap: " (one per package) only move the spinner.
    """
    console = stderr_console()
    if not console.is_terminal:
        stages: set[str] = set()

        def plain(message: str) -> None:
            if message.startswith("debootstrap: "):  # the first line of each stage only
                stage = message.split()[1]
                if stage in stages:
                    return
                stages.add(stage)
            print(message, file=sys.stderr, flush=True)

        yield plain
        return
    with console.status("starting") as status:

        def report(message: str) -> None:
            status.update(message)
            if not message.startswith("debootstrap: "):
                console.log(message)

        yield report


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))
