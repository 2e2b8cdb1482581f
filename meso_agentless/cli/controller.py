"""`meso controller`: the long-running controller and its HTTP API, in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from meso_agentless.cli.base import INVENTORY_OPTION
from meso_agentless.errors import UsageError


@click.command()
@INVENTORY_OPTION
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where the API listens [default: $MESO_LISTEN, or 127.0.0.1:4646].")  # fmt: skip
@click.option("--state", type=click.Path(path_type=Path), default=None,
              help="State database [default: $MESO_STATE, config, state directory].")  # fmt: skip
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="The API's bearer token; made (0600) if missing [default: $MESO_TOKEN_FILE, "
                   "config, the state directory's `token`].")  # fmt: skip
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between samples of each host, and between cycles.")  # fmt: skip
@click.option("--suspect-after", type=click.FloatRange(0.5, 600), default=2.0, show_default=True,
              help="Seconds without an answer before a host is suspect (nothing new goes "
                   "there).")  # fmt: skip
@click.option("--unreachable-after", type=click.FloatRange(1, 3600), default=5.0,
              show_default=True, help="Seconds without an answer before a host is unreachable "
              "(its tasks too; services are replaced after their replace_after).")  # fmt: skip
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Serve HTTPS with this certificate (PEM)...")  # fmt: skip
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="...and this private key.")  # fmt: skip
def controller(
    inventory: str | None,
    listen: str | None,
    state: Path | None,
    token_file: Path | None,
    interval: float,
    suspect_after: float,
    unreachable_after: float,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> int:
    """Run the controller: watch every host, place and launch jobs, serve the API.

    SIGTERM stops it within a few seconds; the tasks keep running on their hosts, and the next
    start reconciles with them.
    """
    from meso_agentless import settings
    from meso_agentless.controller.daemon import Options, serve

    current = settings.current()
    if unreachable_after <= suspect_after:
        raise UsageError("--unreachable-after must be longer than --suspect-after")
    options = Options(
        inventory=current.inventory_source(inventory),
        listen=listen or current.listen,
        state=state or current.state,
        token_file=token_file or current.token_file,
        interval=interval,
        suspect_after=suspect_after,
        unreachable_after=unreachable_after,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    return serve(options)
