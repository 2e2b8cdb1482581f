"""What a job needs next, from its spec and the attempts recorded so far (pure).

For every instance (task, index) the latest attempt decides: nothing yet -> launch attempt 1;
still staging, running or unreachable -> wait; ended -> done, or a new attempt if the restart
policy allows (a service always keeps its instances running); missing (the launch never reached
the host) -> launch the same attempt again, which is safe; unreachable for longer than the
job's replace_after -> lost, and a new attempt elsewhere (a batch task only if its restart
policy allows one more). Instances past a task's count (the job was scaled down) are stopped.
Moving off a draining host is not a failure: a service instance gets a new attempt elsewhere
beside the old one (the caller stops the old once the new is up); a batch attempt stopped by
its drain's deadline gets one elsewhere, whatever its restart policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from meso_agentless.core.tasks import WATCHED, TaskState

WAITING = WATCHED  # staging, running, unreachable: still to be waited for
KEPT = ("service", "cron")  # jobs whose instances are kept (a cron job's are its timers)


class Attempt(Protocol):
    task: str
    index: int
    attempt: int
    host: str
    unit: str
    state: str
    exit_code: int | None
    reason: str | None
    since: float


DRAINED = "drained"  # the reason of a batch attempt stopped by its host's drain deadline
ROLLED_BACK = "rolled back"  # a new version's attempt a failed deployment took back: the one
# before it stands again (core.deployments)
REPLACED = "replaced by version"  # the reason of an old attempt a deployment stopped


def _deployed(a: Attempt) -> bool:
    """An attempt a deployment ended (replaced or rolled back): no restart of its instance."""
    return bool(a.reason) and (a.reason == ROLLED_BACK or a.reason.startswith(REPLACED))


REVOKED = "revoked"  # the reason of an attempt on borrowed capacity its owner took back


@dataclass(frozen=True)
class TaskPolicy:
    name: str
    count: int
    restart: Literal["never", "on-failure", "always"]
    attempts: int  # restarts allowed after the first attempt


@dataclass(frozen=True)
class Launch:
    task: str
    index: int
    attempt: int
    again: bool = False  # the same attempt once more (its launch never reached the host)
    avoid: str | None = None  # a host not to use (the instance was lost there, or is leaving)


@dataclass
class Decisions:
    launch: list[Launch] = field(default_factory=list)
    stop: list[Attempt] = field(default_factory=list)
    lost: list[Attempt] = field(default_factory=list)  # unreachable too long: placed elsewhere
    succeeded: int = 0
    failed: list[Attempt] = field(default_factory=list)  # ended for good, not successfully
    running: int = 0
    waiting: int = 0

    @property
    def settled(self) -> bool:
        """Nothing to launch or wait for."""
        return not self.launch and not self.waiting


def decide(
    job_type: str,
    tasks: Sequence[TaskPolicy],
    attempts: Iterable[Attempt],
    now: float = 0.0,
    lost_after: float = 30.0,
    numbered_from: Mapping[tuple[str, int], int] | None = None,
    move: Mapping[tuple[str, int], str] | None = None,
    replace_batch: bool = True,
    unreachable_from: float = 0.0,
) -> Decisions:
    """`numbered_from`: the last attempt of each instance in earlier runs (new ones follow it).
    `move`: service instances to start anew off a host (task, index) -> the host.
    `replace_batch`: whether a batch task on an unreachable host is replaced at all (else it
    waits for its host: it may still be running there). `unreachable_from`: unreachable time
    counts from no earlier than this (replacements resumed then, after a pause)."""
    latest: dict[tuple[str, int], Attempt] = {}
    first: dict[tuple[str, int], int] = {}
    top: dict[tuple[str, int], int] = {}  # the highest attempt: a new one follows it
    deployed: dict[tuple[str, int], list[int]] = {}  # attempts a deployment ended
    for a in sorted(attempts, key=lambda a: (a.task, a.index, a.attempt)):
        top[(a.task, a.index)] = a.attempt
        if _deployed(a):
            deployed.setdefault((a.task, a.index), []).append(a.attempt)
        first.setdefault((a.task, a.index), a.attempt)
        if a.reason == ROLLED_BACK and a.state not in WAITING:
            continue
        latest[(a.task, a.index)] = a
    out = Decisions()
    counts = {t.name: t.count for t in tasks}
    for (task, index), a in sorted(latest.items()):
        if index >= counts.get(task, 0) and a.state in WAITING:
            out.stop.append(a)
    for policy in tasks:
        for index in range(policy.count):
            a = latest.get((policy.name, index))
            if a is None:
                before = (numbered_from or {}).get((policy.name, index), 0)
                out.launch.append(Launch(policy.name, index, before + 1))
                continue
            if a.state == TaskState.MISSING:
                out.launch.append(Launch(policy.name, index, a.attempt, again=True))
                out.waiting += 1
                continue
            # restarts used: attempts since the first, but for those a deployment ended
            freed = sum(n < a.attempt for n in deployed.get((policy.name, index), ()))
            used = a.attempt - first[(policy.name, index)] - freed
            after = top[(policy.name, index)] + 1
            retry = policy.restart != "never" and used < policy.attempts
            if (
                a.state == TaskState.UNREACHABLE
                and now - max(a.since, unreachable_from) > lost_after
                and (job_type in KEPT or (retry and replace_batch))
            ):
                out.lost.append(a)
                out.launch.append(Launch(policy.name, index, after, avoid=a.host))
                continue
            leaving = (move or {}).get((policy.name, index))
            if leaving is not None and a.state == TaskState.RUNNING and a.host == leaving:
                # no `avoid`: the caller places nothing on a draining host, and once the drain
                # is undone the host is as good as any
                out.launch.append(Launch(policy.name, index, after))
                out.waiting += 1
                out.running += 1
                continue
            if a.state in WAITING:
                out.waiting += 1
                out.running += a.state == TaskState.RUNNING
                continue
            ok = a.state == TaskState.FINISHED
            if job_type == "batch" and ok:
                out.succeeded += 1
                continue
            if a.reason in (DRAINED, REVOKED):  # its host's drain, a revocation: no failure
                out.launch.append(Launch(policy.name, index, after))
                continue
            allowed = (
                job_type in KEPT
                or policy.restart == "always"
                or (policy.restart == "on-failure" and not ok)
            )
            if allowed and used < policy.attempts:
                out.launch.append(Launch(policy.name, index, after))
            elif job_type == "batch" or not ok:
                out.failed.append(a)
    return out


@dataclass(frozen=True)
class Outcome:
    """How a job stands for whoever waits on it: `meso run`'s exit code and the line that says
    why. 0: every task finished, or the service is up; 1: failed or killed; 3: cannot be
    placed."""

    code: int
    message: str


def outcome(
    job_type: str, killed: bool, decisions: Decisions, total: int, pending: int = 0
) -> Outcome | None:
    """The job's outcome after a cycle, or None while it is still on its way (pure).

    `pending`: instances not placed yet (they wait for room, and the job with them; one that
    could never fit is refused when the job is submitted: exit 3 comes from there), or not
    healthy yet (a service is up only when its instances pass their health checks).
    """
    if killed:
        return Outcome(1, "killed")
    if pending:
        return None
    if job_type in KEPT and total == 0:
        return Outcome(0, f"{_up(job_type)}: 0 instances running")
    if decisions.settled:
        if decisions.failed:
            first = decisions.failed[0]
            how = str(first.state)
            if first.exit_code is not None:
                how += f" exit {first.exit_code}"
            return Outcome(1, f"{len(decisions.failed)} task(s) failed; "
                              f"first {first.task}[{first.index}]: {how}")  # fmt: skip
        return Outcome(0, f"all {decisions.succeeded} task(s) finished")
    if job_type in KEPT and not decisions.launch and decisions.running == total:
        return Outcome(0, f"{_up(job_type)}: {total} instances running")
    return None


def _up(job_type: str) -> str:
    return "cron timers placed" if job_type == "cron" else "service up"


def spans(indexes: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive numbers: [0, 1, 2, 5, 7, 8] -> [(0, 2), (5, 5), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
