"""One task instance in detail, for the dashboard's task page: its unit on the host as the
host reported it, every attempt, and what the controller said about it."""

from __future__ import annotations

from meso_agentless.controller.events import EventBus
from meso_agentless.controller.loop import NotFound
from meso_agentless.controller.service import Service, task_view
from meso_agentless.controller.views import TaskDetail, TaskEventView

EVENT_KINDS = ("task", "placed", "unplaced")


def task_detail(service: Service, events: EventBus, name: str, task: str, index: int) -> TaskDetail:
    """NotFound for an unknown job or instance."""
    store = service.store
    if store.job(name) is None:
        raise NotFound(f"no job {name!r}")
    attempts = [r for r in store.tasks(name) if r.task == task and r.index == index]
    if not attempts:
        raise NotFound(f"job {name!r} has no task {task}/{index}")
    latest = attempts[-1]
    view = service.controller.fleet.views().get(latest.host)
    unit = view.units.get(latest.unit) if view is not None else None
    units = {r.unit for r in attempts}
    said = [
        TaskEventView(time=e.time, kind=e.kind, message=e.message)
        for e in events.recent(name)
        if e.kind in EVENT_KINDS and _about(e.data, task, index, units)
    ]
    return TaskDetail(
        job=name,
        task=task_view(latest),
        unit=dict(unit) if unit is not None else None,
        unit_seen=view.seen if unit is not None and view is not None else None,
        attempts=[task_view(r) for r in attempts],
        events=said,
    )


def _about(data: dict, task: str, index: int, units: set[str]) -> bool:
    if data.get("unit") in units:
        return True
    if data.get("task") != task:
        return False
    if "index" in data:
        return data["index"] == index
    return _in_spans(str(data.get("indexes", "")), index)


def _in_spans(text: str, index: int) -> bool:
    """Whether `index` is in an unplaced event's indexes ("3", "2-5", "1,4-6")."""
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and int(low) <= index <= int(high if high.isdigit() else low):
            return True
    return False
