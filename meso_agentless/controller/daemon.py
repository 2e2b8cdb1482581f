"""`meso controller`: the long-running controller with its HTTP API.

Start: take the state file's lock (one controller per state), load the inventory, make the
token if there is none, sample every host once and reconcile the store with what they run
(nothing lost, nothing run twice, nothing adopted), then watch the hosts, run cycles and serve.
SIGTERM or SIGINT: stop accepting requests, end event streams, finish the command or cycle in
flight, close the connections, exit 0; the tasks on the hosts keep running.

With a postgresql:// state, several controllers run at once: the one holding the lease
(controller.leadership) leads as above, with its epoch on every request that changes a host;
the others are standbys, which sample nothing, launch nothing, answer /v1/health and reads of
jobs from the database, and redirect the rest to the leader (api.standby). A standby that takes
the lease samples every host, reconciles, and leads; a leader that loses it stops at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from meso_agentless.api import standby
from meso_agentless.api.app import create_app
from meso_agentless.api.auth import ensure_token
from meso_agentless.api.context import ApiContext
from meso_agentless.api.metrics import Metrics
from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.events import EventBus
from meso_agentless.controller.fleet import Fleet
from meso_agentless.controller.history import HistoryRecorder, ShareHistory, snapshot
from meso_agentless.controller.leadership import Leadership, Sole
from meso_agentless.controller.loop import Controller
from meso_agentless.controller.runner import Runner
from meso_agentless.controller.service import Service
from meso_agentless.errors import UsageError
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.inventory import load_inventory
from meso_agentless.state.lock import StateLock
from meso_agentless.state.postgres import PgLease, PgStore, is_url, redact
from meso_agentless.state.sqlite import Store
from meso_agentless.ui.session import dashboard_line

log = logging.getLogger("meso.controller")
SHUTDOWN_GRACE = 5  # seconds uvicorn waits for open requests after SIGTERM


@dataclass(frozen=True)
class Options:
    inventory: str
    listen: str
    state: str  # a SQLite file's path, or a postgresql:// URL (several controllers)
    token_file: Path
    interval: float = 1.0
    suspect_after: float = 2.0
    unreachable_after: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    advertise: str | None = None  # the API's address for other controllers' clients
    lease: float = 5.0  # seconds a leader's lease lasts without renewal (PostgreSQL)
    watch: bool = True  # each host's watch: a task's end seen at once (hosts.watching)


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) -> (host, port); UsageError naming --listen."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen: {listen!r} is not HOST:PORT")
    return host, int(port)


class _Server(uvicorn.Server):
    """uvicorn, telling the world once it listens, and ending event streams on SIGTERM."""

    def __init__(self, config: uvicorn.Config, on_ready: Any, on_exit: Any) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._on_exit = on_exit

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            bound = self.servers[0].sockets[0].getsockname() if self.servers else None
            self._on_ready(bound)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def listening_socket(host: str, port: int) -> socket.socket:
    """The API's socket, bound and listening before anything else is done (so a port in use is
    a one-line error, not a controller that reconciled hosts and then could not serve)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"--listen: {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = exc.strerror or exc
        raise UsageError(f"--listen: cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def serve(options: Options) -> int:
    """Run until SIGTERM/SIGINT; 0 when stopped cleanly."""
    host, port = parse_listen(options.listen)
    if bool(options.tls_cert) != bool(options.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    scheme = "https" if options.tls_cert else "http"
    inventory = load_inventory(options.inventory)
    if is_url(options.state):  # several controllers: the lease says who leads, not a file
        store: Store = PgStore(options.state)
        lock = None
    else:
        lock = StateLock(Path(options.state))
        lock.acquire_or_explain("controller", wait=0)
        store = Store(Path(options.state))
    try:
        sock = listening_socket(host, port)
        try:
            return _serve(options, inventory, store, lock, sock, host, scheme)
        finally:
            sock.close()
    finally:
        if lock is not None:
            lock.release()


def raise_open_files() -> None:
    """Open files up to the hard limit, as Go programs do: each host takes a few (its
    connections, its watch's channel), and the soft default of 1,024 ends at a few hundred."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def advertised(options: Options, scheme: str, host: str, port: int) -> str:
    """Where other controllers send clients to this one: --advertise, else the listening
    address (the host's name for a wildcard)."""
    if options.advertise:
        return options.advertise.rstrip("/")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
        host = socket.getfqdn()
    return f"{scheme}://{host}:{port}"


def _serve(options: Options, inventory: Any, store: Store, lock: StateLock | None,
           sock: socket.socket, host: str, scheme: str) -> int:  # fmt: skip
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # a line per connection is noise
    raise_open_files()
    own = advertised(options, scheme, host, sock.getsockname()[1])
    token = ensure_token(options.token_file)
    clock = SystemClock()
    events = EventBus(clock.time)
    events.subscribe(callback=lambda e: log.info("%s", e.message))
    plane = ExecutionPlane(inventory.nodes)
    fleet = Fleet(plane, clock, interval=options.interval, suspect_after=options.suspect_after,
                  unreachable_after=options.unreachable_after, watch=options.watch)  # fmt: skip
    controller = Controller(store, inventory, plane, fleet, clock, events)
    if isinstance(store, PgStore):
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        leadership: Leadership | Sole = Leadership(PgLease(store, holder, own, options.lease),
                                                   ttl=options.lease)  # fmt: skip
    else:
        leadership = Sole()
    service = Service(controller, leadership)
    metrics = Metrics(service)
    events.counted = lambda e: metrics.events.labels(e.kind).inc()
    fleet.sampled = lambda seconds, ok: metrics.sample.labels("ok" if ok else "failed").observe(
        seconds
    )

    def cycled(seconds: float, report: Any) -> None:
        metrics.cycle.observe(seconds)
        if report.allocated:
            metrics.allocation.observe(report.allocation_seconds)

    acting: list[int | None] = []  # [epoch] while this controller acts as the leader

    def gate() -> bool:
        """On the controller's thread, before each command and cycle: act only as the leader;
        taking over, sample every host first (the next cycle reconciles with them)."""
        leading, epoch = leadership.state()
        if not leading:
            if acting:
                log.warning("not the leader any more: standby (sampling and launching stop)")
                acting.clear()
                fleet.stop()
            return False
        if acting != [epoch]:
            if acting:
                fleet.stop()
            plane.fence = None if epoch is None else (store.identity, epoch)
            acting[:] = [epoch]
            log.info("taking the lead at epoch %s: sampling every host", epoch)
            fleet.start()
            fleet.wait_round(timeout=options.unreachable_after)
            log.info("leading at epoch %s: every host sampled, reconciling", epoch)
            # frameworks registered meanwhile (with another leader) have their failover time
            # from now: their streams went with that leader
            controller.schedulers.start()
            return leadership.state() == (True, epoch)
        return True

    runner = Runner(controller, options.interval, on_cycle=cycled, gate=gate)
    fleet.on_change = runner.wake
    if isinstance(leadership, Leadership):
        leadership.on_change = runner.wake
    stopping = False

    def shutting_down() -> bool:
        return stopping

    def on_exit() -> None:
        nonlocal stopping
        stopping = True
        events.close()
        controller.schedulers.close()

    def on_ready(bound: tuple | None) -> None:
        port = bound[1] if bound else sock.getsockname()[1]
        actual = f"{scheme}://{host}:{port}"
        if lock is not None:
            lock.describe("controller", actual)
        else:
            print(f"meso controller: state {redact(options.state)}, advertised as {own}",
                  file=sys.stderr, flush=True)  # fmt: skip
        print(f"meso controller: listening on {actual}, token in {options.token_file}",
              file=sys.stderr, flush=True)  # fmt: skip
        # the one line with the token, and only on a terminal (never in a log or the journal)
        print(dashboard_line(actual, token, options.token_file, sys.stderr.isatty()),
              file=sys.stderr, flush=True)  # fmt: skip

    # reconcile before serving: what the hosts run now is the truth (the samplers run already,
    # so however long that takes, no host looks silent afterwards)
    if isinstance(leadership, Leadership):
        leadership.step()  # leader now, or a standby: known before serving
        leadership.start()
    if gate():
        controller.tick()
    runner.start()
    history = ShareHistory(interval=options.interval)
    recorder = HistoryRecorder(history, lambda: snapshot(service, clock.time()), options.interval)
    recorder.start()
    app = create_app(ApiContext(service, runner, events, token, shutting_down, history), metrics)
    standby.install(app, leadership, token, own)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
        ssl_keyfile=str(options.tls_key) if options.tls_key else None,
    )  # fmt: skip
    server = _Server(config, on_ready, on_exit)
    # uvicorn raises the signal again once it has shut down; by then the stop is done, and
    # this process exits 0 (a clean stop, as systemd and the README expect)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        on_exit()
        recorder.stop()
        runner.stop()
        fleet.stop()
        leadership.stop()  # let the lease go: a standby takes over at once
        plane.close()
        store.close()
    return 0
