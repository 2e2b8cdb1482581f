"""The cluster's sharing over the last hour, kept by the controller in memory (no database).

Every sample interval the recorder takes one point: each framework's dominant share, weighted
share, fair share and allocated cpus and memory, and the cluster's capacity, allocation and use.
The last minutes are kept at that interval; older points are averaged into buckets (15 s by
default), so an hour of history stays a few hundred points whatever the interval.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meso_agentless.controller.service import Service

log = logging.getLogger("meso.controller")

WINDOW = 3600.0  # seconds of history kept
RAW_SECONDS = 300.0  # the latest points at full resolution
BUCKET = 15.0  # older points: one average per bucket
FRAMEWORK_FIELDS = ("share", "weighted_share", "fair", "cpus", "mem", "tasks")
CLUSTER_FIELDS = ("cpus_total", "cpus_allocated", "cpus_used", "mem_total", "mem_allocated",
                  "mem_used")  # fmt: skip


@dataclass(frozen=True)
class Point:
    """The cluster at one time: per framework FRAMEWORK_FIELDS, and CLUSTER_FIELDS (fair is
    the weighted share each framework with work would have if the cluster were shared fairly:
    1 / the sum of their weights; None for a framework with no work)."""

    time: float
    frameworks: Mapping[str, Mapping[str, float | None]]
    cluster: Mapping[str, float]


@dataclass
class _Bucket:
    start: float
    points: list[Point] = field(default_factory=list)


class ShareHistory:
    """Points of the last `window` seconds: at full resolution for `raw_seconds`, averaged per
    `bucket` seconds before that. Thread-safe (one writer, many readers)."""

    def __init__(self, interval: float = 1.0, window: float = WINDOW,
                 raw_seconds: float = RAW_SECONDS, bucket: float = BUCKET) -> None:  # fmt: skip
        self.interval = interval
        self.window = window
        self.bucket = max(bucket, interval)
        self._raw: deque[Point] = deque(maxlen=max(2, int(raw_seconds / interval) + 1))
        self._coarse: deque[Point] = deque(maxlen=int(window / self.bucket) + 2)
        self._open: _Bucket | None = None
        self._lock = threading.Lock()

    def record(self, point: Point) -> None:
        with self._lock:
            if self._raw.maxlen is not None and len(self._raw) == self._raw.maxlen:
                self._fold(self._raw[0])  # leaving full resolution: into its bucket
            self._raw.append(point)

    def _fold(self, point: Point) -> None:
        start = point.time - point.time % self.bucket
        if self._open is not None and self._open.start != start:
            self._coarse.append(average(self._open.points))
            self._open = None
        if self._open is None:
            self._open = _Bucket(start)
        self._open.points.append(point)

    def points(self, since: float | None = None, now: float | None = None) -> list[Point]:
        """Oldest first: averaged buckets, then the points at full resolution; only those after
        `since` and within the window before `now` (default: the newest point's time)."""
        with self._lock:
            raw = list(self._raw)
            coarse = list(self._coarse)
            if self._open is not None:
                coarse.append(average(self._open.points))
        if raw:
            coarse = [p for p in coarse if p.time < raw[0].time]
        out = coarse + raw
        if not out:
            return []
        newest = out[-1].time if now is None else now
        oldest = newest - self.window
        return [p for p in out if p.time >= oldest and (since is None or p.time > since)]


def average(points: list[Point]) -> Point:
    """One point standing for several, at their mean time: each field's mean (a framework
    missing from a point counts as zero there; fair is the mean of the points that have one)."""
    n = len(points)
    names = sorted({name for p in points for name in p.frameworks})
    frameworks: dict[str, dict[str, float | None]] = {}
    for name in names:
        values: dict[str, float | None] = {}
        for key in FRAMEWORK_FIELDS:
            given = [p.frameworks.get(name, {}).get(key) for p in points]
            if key == "fair":
                known = [v for v in given if v is not None]
                values[key] = sum(known) / len(known) if known else None
            else:
                values[key] = sum(v or 0.0 for v in given) / n
        frameworks[name] = values
    cluster = {k: sum(p.cluster.get(k, 0.0) for p in points) / n for k in CLUSTER_FIELDS}
    return Point(sum(p.time for p in points) / n, frameworks, cluster)


def snapshot(service: Service, now: float) -> Point:
    """The point the cluster is at now, from what the service answers (the API's own views)."""
    hosts = service.hosts().hosts
    frameworks = service.frameworks().frameworks
    busy = {j.framework for j in service.store.jobs() if j.state == "active"}
    busy |= {f.name for f in frameworks if f.tasks}
    weights = sum(f.weight for f in frameworks if f.name in busy)
    fair = 1.0 / weights if weights else None
    points: dict[str, dict[str, float | None]] = {}
    for f in frameworks:
        points[f.name] = {
            "share": f.share,
            "weighted_share": f.weighted_share,
            "fair": fair if f.name in busy else None,
            "cpus": float(f.allocated.get("cpus", 0)),
            "mem": float(f.allocated.get("mem", 0)),
            "tasks": float(f.tasks),
        }
    cluster = dict.fromkeys(CLUSTER_FIELDS, 0.0)
    for h in hosts:
        if not h.reachable:
            continue
        cpus = float(h.capacity.get("cpus", 0))
        cluster["cpus_total"] += cpus
        cluster["cpus_allocated"] += float(h.allocated.get("cpus", 0))
        cluster["cpus_used"] += min(cpus, h.load[0]) if h.load else 0.0  # runnable, at most all
        cluster["mem_total"] += float(h.capacity.get("mem", 0))
        cluster["mem_allocated"] += float(h.allocated.get("mem", 0))
        cluster["mem_used"] += float(h.usage.get("mem", 0))
    return Point(now, points, cluster)


class HistoryRecorder:
    """A thread taking a snapshot every `interval` seconds into `history`."""

    def __init__(self, history: ShareHistory, take: Callable[[], Point], interval: float) -> None:
        self.history = history
        self.take = take
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="share-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.history.record(self.take())
            except Exception:  # a failed look is a missing point, never a dead recorder
                log.exception("sharing history: no point this time")
