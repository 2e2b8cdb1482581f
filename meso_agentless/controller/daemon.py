"""`meso controller`: the long-running controller with its HTTP API.

Start: take the state file's lock (one controller per state), load the inventory, make the
token if there is none, sample every host once and reconcile the store with what they run
(nothing lost, nothing run twice, nothing adopted), then watch the hosts, run cycles and serve.
SIGTERM or SIGINT: stop accepting requests, end event streams, finish the command or cycle in
flight, close the connections, exit 0; the tasks on the hosts keep running.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from meso_agentless.api.app import create_app
from meso_agentless.api.auth import ensure_token
from meso_agentless.api.context import ApiContext
from meso_agentless.api.metrics import Metrics
from meso_agentless.controller.clock import SystemClock
from meso_agentless.controller.events import EventBus
from meso_agentless.controller.fleet import Fleet
from meso_agentless.controller.loop import Controller
from meso_agentless.controller.runner import Runner
from meso_agentless.controller.service import Service
from meso_agentless.errors import UsageError
from meso_agentless.hosts.plane import ExecutionPlane
from meso_agentless.inventory import load_inventory
from meso_agentless.state.lock import StateLock
from meso_agentless.state.sqlite import Store

log = logging.getLogger("meso.controller")
SHUTDOWN_GRACE = 5  # seconds uvicorn waits for open requests after SIGTERM


@dataclass(frozen=True)
class Options:
    inventory: str
    listen: str
    state: Path
    token_file: Path
    interval: float = 1.0
    suspect_after: float = 2.0
    unreachable_after: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None


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
    lock = StateLock(options.state)
    lock.acquire_or_explain("controller", wait=0)
    try:
        sock = listening_socket(host, port)
        try:
            return _serve(options, inventory, lock, sock, host, scheme)
        finally:
            sock.close()
    finally:
        lock.release()


def _serve(options: Options, inventory: Any, lock: StateLock, sock: socket.socket, host: str,
           scheme: str) -> int:  # fmt: skip
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # a line per connection is noise
    store = Store(options.state)
    token = ensure_token(options.token_file)
    clock = SystemClock()
    events = EventBus(clock.time)
    events.subscribe(callback=lambda e: log.info("%s", e.message))
    plane = ExecutionPlane(inventory.nodes)
    fleet = Fleet(plane, clock, interval=options.interval, suspect_after=options.suspect_after,
                  unreachable_after=options.unreachable_after)  # fmt: skip
    controller = Controller(store, inventory, plane, fleet, clock, events)
    controller.schedulers.start()
    service = Service(controller)
    metrics = Metrics(service)
    events.counted = lambda e: metrics.events.labels(e.kind).inc()
    fleet.sampled = lambda seconds, ok: metrics.sample.labels("ok" if ok else "failed").observe(
        seconds
    )

    def cycled(seconds: float, report: Any) -> None:
        metrics.cycle.observe(seconds)
        if report.allocated:
            metrics.allocation.observe(report.allocation_seconds)

    runner = Runner(controller, options.interval, on_cycle=cycled)
    fleet.on_change = runner.wake
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
        lock.describe("controller", actual)
        print(f"meso controller: listening on {actual}, token in {options.token_file}",
              file=sys.stderr, flush=True)  # fmt: skip

    # reconcile before serving: what the hosts run now is the truth (the samplers run already,
    # so however long that takes, no host looks silent afterwards)
    fleet.start()
    fleet.wait_round(timeout=options.unreachable_after)
    controller.tick()
    runner.start()
    app = create_app(ApiContext(service, runner, events, token, shutting_down), metrics)
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
        runner.stop()
        fleet.stop()
        plane.close()
        store.close()
    return 0
