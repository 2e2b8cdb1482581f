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
@click.option("--state", default=None, metavar="PATH|URL",
              help="State: a SQLite file, or postgresql://USER@HOST/DB for several "
                   "controllers [default: $MESO_STATE, config, state directory].")  # fmt: skip
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
@click.option("--advertise", default=None, metavar="URL",
              help="This controller's API address, where standbys send clients when it leads "
                   "[default: the --listen address].")  # fmt: skip
@click.option("--lease", type=click.FloatRange(3, 600), default=5.0, show_default=True,
              help="Seconds a leader's lease lasts unrenewed (postgresql:// state): a standby "
                   "takes over within about that after the leader dies.")  # fmt: skip
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Keep a watch on each host (a second node command) that tells when a task "
                   "ends, so ends are seen at once; --no-watch leaves them to the next "
                   "sample (a watch: 2 ms of host CPU a short task, 7 MiB a host).")  # fmt: skip
@click.option("--migrate-only", is_flag=True,
              help="Make or migrate the state's schema, then exit (no inventory).")  # fmt: skip
def controller(
    inventory: str | None,
    listen: str | None,
    state: str | None,
    token_file: Path | None,
    interval: float,
    suspect_after: float,
    unreachable_after: float,
    tls_cert: Path | None,
    tls_key: Path | None,
    advertise: str | None,
    lease: float,
    watch: bool,
    migrate_only: bool,
) -> int:
    """Run the controller: watch every host, place and launch jobs, serve the API.

    SIGTERM stops it within a few seconds; the tasks keep running on their hosts, and the next
    start reconciles with them.
    """
    from meso_agentless import settings
    from meso_agentless.controller.daemon import Options, serve

    current = settings.current()
    state = state or current.state_url or str(current.state)
    if migrate_only:
        return migrate(state)
    if unreachable_after <= suspect_after:
        raise UsageError("--unreachable-after must be longer than --suspect-after")
    options = Options(
        inventory=current.inventory_source(inventory),
        listen=listen or current.listen,
        state=state,
        token_file=token_file or current.token_file,
        interval=interval,
        suspect_after=suspect_after,
        unreachable_after=unreachable_after,
        tls_cert=tls_cert,
        tls_key=tls_key,
        advertise=advertise,
        lease=lease,
        watch=watch,
    )
    return serve(options)


def migrate(state: str) -> int:
    """Bring the state's schema to this meso's (made if new); refuse a newer one."""
    from meso_agentless.state.postgres import open_store, redact
    from meso_agentless.state.sqlite import SCHEMA_VERSION

    store = open_store(state)
    store.close()
    click.echo(f"state {redact(state)}: schema {SCHEMA_VERSION}", err=True)
    return 0
