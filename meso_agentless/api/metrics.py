"""/metrics: Prometheus exposition (prometheus_client) of the controller's own figures."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meso_agentless.controller.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycle = Histogram("meso_cycle_seconds", "One controller cycle, end to end",
                               buckets=FAST, registry=self.registry)  # fmt: skip
        self.allocation = Histogram("meso_allocation_seconds", "One allocation cycle (DRF)",
                                    buckets=FAST, registry=self.registry)  # fmt: skip
        self.sample = Histogram("meso_sample_seconds", "One host's sample round trip",
                                ["outcome"], buckets=FAST, registry=self.registry)  # fmt: skip
        self.requests = Counter("meso_api_requests", "API requests by method and status code",
                                ["method", "code"], registry=self.registry)  # fmt: skip
        self.events = Counter("meso_events", "Events published, by kind", ["kind"],
                              registry=self.registry)  # fmt: skip
        self.registry.register(_State(service))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _State(Collector):
    """Gauges read from the controller at scrape time."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily("meso_tasks", "Task attempts of current runs, by state",
                                  labels=["state"])  # fmt: skip
        for state, n in sorted(Tally(r.state.value for r in self.service.store.tasks()).items()):
            tasks.add_metric([state], n)
        yield tasks
        hosts = GaugeMetricFamily("meso_hosts", "Hosts by state", labels=["state"])
        for state, n in sorted(Tally(h.state for h in self.service.hosts().hosts).items()):
            hosts.add_metric([state], n)
        yield hosts
        share = GaugeMetricFamily("meso_framework_dominant_share",
                                  "Each framework's dominant share of the cluster",
                                  labels=["framework"])  # fmt: skip
        weighted = GaugeMetricFamily("meso_framework_weighted_share",
                                     "Dominant share divided by weight (what DRF evens out)",
                                     labels=["framework"])  # fmt: skip
        allocated = GaugeMetricFamily(
            "meso_framework_allocated",
            "Resources allocated to each framework (cpus in CPUs, sizes in bytes)",
            labels=["framework", "resource"],
        )
        for fw in self.service.frameworks().frameworks:
            share.add_metric([fw.name], fw.share)
            weighted.add_metric([fw.name], fw.weighted_share)
            for resource, amount in sorted(fw.allocated.items()):
                allocated.add_metric([fw.name, resource], amount)
        yield share
        yield weighted
        yield allocated


class RequestCounter:
    """Pure ASGI middleware counting responses by method and code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                method = scope.get("method", "?")
                self.metrics.requests.labels(method, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
