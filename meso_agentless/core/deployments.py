"""A deployment's next step, from its policy and the attempts with their versions (pure).

A service changes version one slot (task, index) at a time, like a drain's move: a new attempt
of the new version starts beside the old one; the old one stops once the new one has been
healthy (or running, without checks) for `min_healthy_time`. At most `max_parallel` slots are
under way at once, so the service never has fewer than `count - max_parallel` healthy
instances, nor more than `count + max(max_parallel, canary)`. With `canary`, that many slots
start first and their old instances stay until the deployment is promoted.

A new attempt that fails (its health check, its exit), or is not healthy within
`healthy_deadline` of its start, fails the deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meso_agentless.core.jobs import ROLLED_BACK

RUNNING, WAITING, SUCCESSFUL, FAILED = "running", "waiting", "successful", "failed"
LIVE = frozenset({"staging", "running", "unreachable", "missing"})
ENDED_BADLY = frozenset({"failed", "finished"})  # a service's instance has no business ending


@dataclass(frozen=True)
class Policy:
    max_parallel: int = 1
    min_healthy_time: float = 10.0
    healthy_deadline: float = 300.0
    canary: int = 0
    auto_promote: bool = False


@dataclass(frozen=True)
class Instance:
    """One attempt of a slot, as the store holds it. `current`: it runs the deployment's
    target spec (its version's task is the target's, counts aside)."""

    task: str
    index: int
    attempt: int
    unit: str
    host: str
    current: bool
    state: str
    health: str | None = None  # None: no checks (running is enough)
    healthy_since: float | None = None
    since: float = 0.0  # when it entered its state
    created: float = 0.0  # when it was placed
    reason: str | None = None


@dataclass(frozen=True)
class Step:
    """What the controller does now: start a new attempt in these slots (beside the old one,
    on any host: `replace` gives the old one's host), stop these old attempts (`retire`),
    record the deployment's state, and whether it is promoted now."""

    state: str
    reason: str
    replace: tuple[tuple[str, int, str], ...] = ()
    retire: tuple[Instance, ...] = ()
    promote: bool = False
    progress: dict[str, dict[str, int]] = field(default_factory=dict)


def _healthy(a: Instance, now: float, min_healthy_time: float) -> bool:
    """Running and healthy (or unchecked) for at least `min_healthy_time`."""
    if a.state != "running":
        return False
    if a.health is None:
        return now - a.since >= min_healthy_time
    return (
        a.health == "healthy"
        and a.healthy_since is not None
        and now - a.healthy_since >= min_healthy_time
    )


def _is_up(a: Instance) -> bool:
    return a.state == "running" and a.health in (None, "healthy")


@dataclass
class _Slot:
    task: str
    index: int
    attempts: list[Instance]

    @property
    def latest(self) -> Instance:
        return self.attempts[-1]

    @property
    def old_live(self) -> list[Instance]:
        return [a for a in self.attempts[:-1] if a.state in LIVE and not a.current] + (
            [] if self.latest.current or self.latest.state not in LIVE else [self.latest]
        )


def slots(instances: Iterable[Instance], counts: Mapping[str, int]) -> list[_Slot]:
    """The slots of the target's tasks that have attempts (rolled-back attempts left out)."""
    by: dict[tuple[str, int], list[Instance]] = {}
    for a in sorted(instances, key=lambda a: (a.task, a.index, a.attempt)):
        if a.reason == ROLLED_BACK and a.state not in LIVE:
            continue
        if a.index < counts.get(a.task, 0):
            by.setdefault((a.task, a.index), []).append(a)
    order = {name: i for i, name in enumerate(counts)}
    keys = sorted(by, key=lambda k: (order.get(k[0], 0), k[1]))
    return [_Slot(task, index, by[(task, index)]) for task, index in keys]


def failure(
    policy: Policy, instances: Iterable[Instance], started: float, now: float,
    checks: Mapping[str, str],
) -> str | None:  # fmt: skip
    """Why the deployment failed, or None: a new attempt started in it ended, or is not
    healthy within the deadline."""
    for a in sorted(instances, key=lambda a: (a.task, a.index, a.attempt)):
        if not a.current or a.created < started or a.reason == ROLLED_BACK:
            continue
        check = checks.get(a.task)
        named = f" its health check ({check})" if check else ""
        if a.state in ENDED_BADLY:
            how = a.reason or a.state
            if check and a.reason and a.reason.startswith("unhealthy"):
                return f"{a.task}[{a.index}] failed{named}: {how}"
            return f"{a.task}[{a.index}] {a.state}: {how}"
        if a.state in LIVE and not _is_up(a) and now - a.created > policy.healthy_deadline:
            what = f"did not pass{named}" if check else "was not running"
            return (f"{a.task}[{a.index}] {what} within the healthy_deadline "
                    f"({policy.healthy_deadline:g} s)")  # fmt: skip
    return None


def step(
    policy: Policy,
    counts: Mapping[str, int],
    instances: Sequence[Instance],
    *,
    promoted: bool,
    started: float,
    now: float,
    checks: Mapping[str, str] | None = None,
) -> Step:
    """The deployment's next step (see the module's description)."""
    found = slots(instances, counts)
    progress = _progress(found, counts, now, policy)
    why = failure(policy, instances, started, now, checks or {})
    if why is not None:
        return Step(FAILED, why, progress=progress)
    done = [s for s in found
            if s.latest.current and _healthy(s.latest, now, policy.min_healthy_time)]  # fmt: skip
    outdated = [s for s in found if not s.latest.current]
    under_way = [s for s in found if s.latest.current and s not in done and s.old_live]
    fresh = [s for s in found if s.latest.current and s not in done and not s.old_live]
    replaceable = [s for s in outdated if s.latest.state == "running"]
    canaries = policy.canary and not promoted and (outdated or under_way or
                                                   any(s.old_live for s in done))  # fmt: skip
    if canaries:
        held = [s for s in [*done, *under_way] if s.old_live]
        room = max(0, policy.canary - len(held))
        replace = tuple((s.task, s.index, s.latest.host) for s in replaceable[:room])
        if not replace and held and all(s in done for s in held):
            if policy.auto_promote:
                return Step(RUNNING, f"{len(held)} canary(ies) healthy: promoted",
                            promote=True, progress=progress)  # fmt: skip
            return Step(WAITING, f"{len(held)} canary(ies) healthy: waiting for a promote",
                        progress=progress)  # fmt: skip
        return Step(RUNNING, f"starting {policy.canary} canary(ies)", replace=replace,
                    progress=progress)  # fmt: skip
    retire = tuple(a for s in done for a in s.old_live)
    room = max(0, policy.max_parallel - len(under_way) - len(fresh))
    replace = tuple((s.task, s.index, s.latest.host) for s in replaceable[:room])
    missing = sum(counts.values()) - len(found)
    if not outdated and not under_way and not fresh and not retire and not missing:
        total = sum(counts.values())
        return Step(SUCCESSFUL, f"{total} instance(s) of the new version healthy",
                    progress=progress)  # fmt: skip
    left = len(outdated) + len(under_way)
    return Step(RUNNING, f"{len(done)} of {sum(counts.values())} replaced, {left} to go",
                replace=replace, retire=retire, progress=progress)  # fmt: skip


def _progress(
    found: Sequence[_Slot], counts: Mapping[str, int], now: float, policy: Policy
) -> dict[str, dict[str, int]]:
    """Per task: desired, new (latest is current), healthy new, old still running."""
    out = {t: {"desired": c, "new": 0, "healthy": 0, "old": 0} for t, c in counts.items()}
    for s in found:
        row = out[s.task]
        row["new"] += s.latest.current
        row["healthy"] += s.latest.current and _healthy(s.latest, now, policy.min_healthy_time)
        row["old"] += sum(a.state == "running" for a in s.old_live)
    return out


def rollback(instances: Iterable[Instance]) -> list[Instance]:
    """The new attempts a failed deployment takes back: those of slots where an old attempt
    still runs (it stands again). Slots with no old attempt left keep theirs (a revert
    replaces them like any outdated instance)."""
    by: dict[tuple[str, int], list[Instance]] = {}
    for a in instances:
        by.setdefault((a.task, a.index), []).append(a)
    out = []
    for attempts in by.values():
        if any(not a.current and a.state in LIVE for a in attempts):
            out += [a for a in attempts if a.current and a.reason != ROLLED_BACK]
    return sorted(out, key=lambda a: (a.task, a.index, a.attempt))
