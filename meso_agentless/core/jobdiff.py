"""What a new job file changes against the job the controller holds: field by field, and what
submitting it would do (pure: specs in, decisions out).

The actions mirror the controller's `submit` and `scale`: a new job is created; an ended one
runs again (unless it is done with the same spec); an active one with the same spec is left as
it is; one whose tasks' counts alone differ is scaled; any other change to an active service is
a deployment (an update: a rolling replacement, core.deployments); to an active job of another
type it needs it killed and submitted again (a replacement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CREATE, RERUN, NONE, SCALE, REPLACE = "create", "rerun", "none", "scale", "replace"
UPDATE = "update"
ACTIVE, DONE = "active", "done"


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs: `path` as in error messages (`tasks[0].resources.cpus`)."""

    path: str
    kind: str  # changed, added, removed
    before: Any = None
    after: Any = None


@dataclass(frozen=True, slots=True)
class Scale:
    task: str
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # create, rerun, none, scale, update, replace
    reason: str
    changes: tuple[Change, ...] = ()
    scale: tuple[Scale, ...] = ()


@dataclass(frozen=True, slots=True)
class Current:
    """The job as the controller holds it."""

    state: str  # active, done, failed, killed
    run: int
    spec: dict
    same_inventory: bool  # submitted against the controller's current inventory


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def changes(before: Any, after: Any, path: str = "") -> list[Change]:
    """Every leaf that differs between two JSON values, in document order; lists by index."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[Change] = []
        for key in [*before, *(k for k in after if k not in before)]:
            where = _join(path, key)
            if key not in after:
                found.append(Change(where, "removed", before=before[key]))
            elif key not in before:
                found.append(Change(where, "added", after=after[key]))
            else:
                found += changes(before[key], after[key], where)
        return found
    if isinstance(before, list) and isinstance(after, list):
        found = []
        for i in range(max(len(before), len(after))):
            where = _join(path, i)
            if i >= len(after):
                found.append(Change(where, "removed", before=before[i]))
            elif i >= len(before):
                found.append(Change(where, "added", after=after[i]))
            else:
                found += changes(before[i], after[i], where)
        return found
    if before == after and type(before) is type(after):
        return []
    return [Change(path, "changed", before=before, after=after)]


def count_only(before: dict, after: dict, found: list[Change]) -> list[Scale] | None:
    """The scaling that turns `before` into `after` when their tasks' counts are all that
    differ (the same tasks, in the same order); None when anything else differs."""
    tasks_before, tasks_after = before.get("tasks", []), after.get("tasks", [])
    if [t.get("name") for t in tasks_before] != [t.get("name") for t in tasks_after]:
        return None
    counted = {f"tasks[{i}].count" for i in range(len(tasks_after))}
    if not found or any(c.path not in counted or c.kind != "changed" for c in found):
        return None
    return [Scale(a["name"], b["count"], a["count"])
            for b, a in zip(tasks_before, tasks_after, strict=True)
            if b["count"] != a["count"]]  # fmt: skip


def decide(name: str, current: Current | None, spec: dict) -> Decision:
    """What submitting `spec` does to the job the controller holds (`current`, None if none)."""
    if current is None:
        return Decision(CREATE, f"job {name!r} is new")
    found = tuple(changes(current.spec, spec))
    same = not found and current.same_inventory
    if current.state == ACTIVE:
        if same:
            return Decision(NONE, f"job {name!r} is active with this spec")
        scaling = count_only(current.spec, spec, list(found)) if current.same_inventory else None
        if scaling:
            steps = ", ".join(f"{s.task} {s.before} -> {s.after}" for s in scaling)
            return Decision(SCALE, f"job {name!r} is active: scale {steps}", found,
                            tuple(scaling))  # fmt: skip
        services = current.spec.get("type") == spec.get("type") == "service"
        if services and current.same_inventory:
            return Decision(UPDATE, f"job {name!r} is active: {len(found)} field(s) differ, "
                                    "a deployment of the new version", found)  # fmt: skip
        why = (f"{len(found)} field(s) differ, not only counts" if found
               else "the controller's inventory changed since it was submitted")  # fmt: skip
        return Decision(REPLACE, f"job {name!r} is active with another spec ({why}): it must "
                                 "be killed and submitted again", found)  # fmt: skip
    if current.state == DONE and same:
        return Decision(NONE, f"job {name!r} is already done (run {current.run})")
    return Decision(RERUN, f"job {name!r} is {current.state} (run {current.run}): a new run",
                    found)  # fmt: skip
