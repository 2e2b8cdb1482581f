"""What every command shares: options, progress, and the backend (a controller's API when
MESO_ADDR is set, else an embedded controller on the state file)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meso_agentless.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from meso_agentless.cli.client import Remote
    from meso_agentless.cli.local import Local

OUTPUT_OPTION = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output format.",
)  # fmt: skip
INVENTORY_OPTION = click.option(
    "-i", "--inventory", "inventory", help="Ansible inventory [default: $MESO_INVENTORY, config]"
)
STATE_OPTION = click.option(
    "--state", "state", type=click.Path(path_type=Path), default=None,
    help="State database, without a controller [default: $MESO_STATE, config, state dir]",
)  # fmt: skip


def backend(inventory: str | None = None, state: Path | None = None) -> Remote | Local:
    """The controller's API if one is configured (MESO_ADDR, `controller:`), else embedded."""
    from meso_agentless import settings

    current = settings.current()
    if current.remote:
        from meso_agentless.cli.client import Remote

        return Remote(current.addrs, current.read_token())
    from meso_agentless.cli.local import Local

    if current.state_url or str(state or "").startswith(("postgresql:", "postgres:")):
        raise UsageError(
            "--state/MESO_STATE: a postgresql:// state is only used through "
            "`meso controller`: set MESO_ADDR to the controllers' addresses"
        )
    return Local(current, inventory, state)


def stderr_console() -> Console:
    from rich.console import Console

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
    import json

    click.echo(json.dumps(data, indent=2))
