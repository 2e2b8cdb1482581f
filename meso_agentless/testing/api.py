"""The HTTP API on a fake cluster, for the controller's unit tests (no lab, no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from meso_agentless.api.app import create_app
from meso_agentless.api.context import ApiContext
from meso_agentless.api.metrics import Metrics
from meso_agentless.controller.runner import Runner
from meso_agentless.controller.service import Service
from meso_agentless.testing.fakes import FakeCluster


@contextmanager
def api_client(cluster: FakeCluster, token: str) -> Iterator[TestClient]:
    """A client of the API app on `cluster`, sending `token`, with the controller's runner
    ticking; `client.cluster` is the cluster."""
    cluster.fleet.refresh()
    runner = Runner(cluster.controller, interval=0.05)
    runner.start()
    service = Service(cluster.controller)
    app = create_app(ApiContext(service, runner, cluster.events, token), Metrics(service))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            client.cluster = cluster  # type: ignore[attr-defined]
            yield client
    finally:
        runner.stop()
