"""The CLI with no controller to talk to: each command runs an embedded one on the state file,
answering with the same service calls (and so the same JSON) as the controller's API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meso_agentless.controller.embedded import Embedded
from meso_agentless.controller.events import Event
from meso_agentless.errors import UsageError
from meso_agentless.settings import Settings

if TYPE_CHECKING:  # a read imports the controller while its hosts connect (see Embedded)
    from meso_agentless.spec import Job


class Local:
    def __init__(self, settings: Settings, inventory: str | None, state: Path | None) -> None:
        self.settings = settings
        self.inventory = inventory
        self.state = state or settings.state

    def _source(self, job: str | None = None) -> str:
        """-i; else the inventory the job was run with; else the settings' inventory."""
        if self.inventory or job is None:
            return self.settings.inventory_source(self.inventory)
        from meso_agentless.state.sqlite import Store

        store = Store(self.state)
        try:
            row = store.job(job)
        finally:
            store.close()
        if row is None:
            from meso_agentless.controller.loop import NotFound

            raise NotFound(f"no job {job!r}")
        return row.inventory

    def _embedded(
        self,
        source: str,
        write: bool,
        on_event: Any = None,
        job: str | None = None,
        connect: bool = True,
    ) -> Embedded:
        return Embedded(
            source, self.state, write=write, on_event=on_event, job=job, connect=connect
        )

    # -- reads ---------------------------------------------------------------------------------

    def hosts(self) -> dict:
        """Sampled now, without a controller (controller/reading.py): a cold `meso hosts`
        imports neither pydantic nor the controller."""
        from meso_agentless.controller import reading

        return reading.hosts(self._source(), self.state)

    def frameworks(self) -> dict:
        with self._embedded(self._source(), write=False) as e:
            e.sync(record=False)
            return e.service.frameworks().model_dump(mode="json")

    def queue(self, framework: str | None = None) -> dict:
        with self._embedded(self._source(), write=False) as e:
            e.sync(record=False)
            return e.service.queue(framework)

    def explain(self, job: str, task: str | None = None) -> dict:
        with self._embedded(self._source(job), write=False) as e:
            e.sync(record=False)
            return e.service.explain(job, task)

    def jobs(self, names: list[str] | None = None) -> dict:
        """Every job (or these), after bringing the store up to date with their hosts when no
        other process holds the state."""
        from meso_agentless.state.sqlite import Store

        store = Store(self.state)
        try:
            rows = {j.name: j for j in store.jobs()}
        finally:
            store.close()
        wanted = names or list(rows)
        missing = [n for n in wanted if n not in rows]
        if missing:
            from meso_agentless.controller.loop import NotFound

            raise NotFound(f"no job {missing[0]!r}")
        sources = {self.inventory or rows[n].inventory for n in wanted}
        result = None
        for source in sorted(sources):
            with self._embedded(source, write=False) as e:
                e.sync(record=True)
                result = e.service.jobs(wanted)
        if result is None:  # no jobs at all
            return {"jobs": []}
        return result.model_dump(mode="json")

    def job(self, name: str) -> dict:
        return self.jobs([name])["jobs"][0]

    def plan(self, jobs: list[Job]) -> dict:
        with self._embedded(self._source(), write=False) as e:
            e.sync(record=False)
            return e.service.plan(jobs)

    def plan_job(self, job: Job) -> dict:
        from meso_agentless.controller.jobplan import plan_job

        with self._embedded(self._source(), write=False) as e:
            e.sync(record=False)
            return plan_job(e.service, job)

    def versions(self, name: str) -> dict:
        with self._embedded(self._source(name), write=False, connect=False) as e:
            return e.controller.deployer.versions_view(name).model_dump(mode="json")

    def deployment(self, name: str) -> dict:
        with self._embedded(self._source(name), write=False) as e:
            e.sync(record=True)
            return e.controller.deployer.deployment_view(name).model_dump(mode="json")

    def deployment_action(self, name: str, action: str, on_event: Callable[[dict], None]) -> tuple:
        """Embedded, a deployment moves only while a command runs: a promote drives it on to
        its outcome (as `meso run` does)."""
        with self._embedded(self._source(name), write=True, on_event=_adapt(on_event),
                            job=name) as e:  # fmt: skip
            e.fleet.refresh()
            e.controller.tick(allocate_now=False)
            deployer = e.controller.deployer
            if action == "promote":
                deployer.promote(name)
            else:
                deployer.fail(name)
            outcome = None
            if action == "promote":
                row = e.controller.store.job(name)
                outcome = _outcome(e.drive(name, row.version), e, name)  # type: ignore[union-attr]
            return deployer.deployment_view(name).model_dump(mode="json"), outcome

    def revert(self, name: str, version: int, on_event: Callable[[dict], None]) -> tuple:
        with self._embedded(self._source(name), write=True, on_event=_adapt(on_event),
                            job=name) as e:  # fmt: skip
            e.fleet.refresh()
            e.controller.tick(allocate_now=False)
            row = e.controller.deployer.revert(name, version, None)
            outcome = e.drive(name, row.version)
            return e.service.job(name).model_dump(mode="json"), _outcome(outcome, e, name)

    def logs(
        self,
        name: str,
        task: str | None,
        index: int | None,
        follow: bool,
        lines: int,
        run: str | None = None,
    ) -> Iterator[bytes]:
        with self._embedded(self._source(name), write=False) as e:
            e.fleet.refresh()  # to know whether the hosts can be asked
            yield from e.service.logs(name, task, index, follow, lines, run)

    # -- changes -------------------------------------------------------------------------------

    def run(
        self, job: Job, detach: bool, on_event: Callable[[dict], None], again: bool = False
    ) -> tuple[dict, Any]:
        if job.type == "cron":
            raise UsageError(
                f"job {job.job!r} is a cron job: its timers need a running controller to keep "
                "their leases, collect runs and move them (start `meso controller` and set "
                "MESO_ADDR)"
            )
        with self._embedded(self._source(), write=True, on_event=_adapt(on_event),
                            job=job.job) as e:  # fmt: skip
            e.fleet.refresh()
            e.controller.tick(allocate_now=False)  # reconcile what earlier commands left
            row = e.controller.submit(job, again=again)
            outcome = e.drive(job.job, row.version, detach=detach)
            result = _outcome(outcome, e, job.job)
            if outcome is not None and outcome.code != 0 and not detach:
                _finish_revert(e, job.job)
            return e.service.job(job.job).model_dump(mode="json"), result

    def scale(self, name: str, task: str, count: int, on_event: Callable[[dict], None]) -> tuple:
        with self._embedded(self._source(name), write=True, on_event=_adapt(on_event),
                            job=name) as e:  # fmt: skip
            e.fleet.refresh()
            e.controller.tick(allocate_now=False)
            row = e.controller.scale(name, task, count)
            outcome = e.drive(name, row.version)
            return e.service.job(name).model_dump(mode="json"), _outcome(outcome, e, name)

    def trigger(self, name: str) -> dict:
        with self._embedded(self._source(name), write=True) as e:
            e.fleet.refresh()
            e.controller.sync()
            return e.service.trigger(name).model_dump(mode="json")

    def kill(self, name: str) -> dict:
        with self._embedded(self._source(name), write=True) as e:
            e.fleet.refresh()
            e.controller.sync()
            stopped = e.controller.kill(name)
            return {"job": name, "stopped": stopped}

    def drain(self, host: str, deadline: str | None) -> dict:
        """Embedded, a drain is recorded and acted on by every later command (and by a
        controller started on this state)."""
        from meso_agentless.spec import parse_duration

        with self._embedded(self._source(), write=True) as e:
            e.fleet.refresh()
            e.controller.sync()
            if deadline is None:
                e.controller.undrain(host)
            else:
                try:
                    seconds = parse_duration(deadline)
                except ValueError as exc:
                    raise UsageError(f"--deadline: {exc}") from None
                e.controller.drain(host, seconds)
            e.controller.tick()
            return e.service.host(host).model_dump(mode="json")

    def cluster(self) -> dict:
        from meso_agentless.controller import reading

        return reading.cluster(self._source(), self.state)

    def allow_replacements(self) -> dict:
        raise UsageError("replacements pause only in a running controller (set MESO_ADDR)")

    def gc(self) -> dict:
        with self._embedded(self._source(), write=True) as e:
            e.fleet.refresh()
            e.controller.sync()
            return {"stopped": e.controller.gc()}

    def set_framework(self, name: str, change: dict) -> dict:
        from meso_agentless.core.resources import ResourceError, parse_resources

        with self._embedded(self._source(), write=True) as e:
            e.service.known_framework(name)
            quota = None
            if change.get("quota") is not None:
                try:
                    quota = parse_resources(change["quota"], "quota", keep_zeros=True)
                except ResourceError as exc:
                    raise UsageError(f"--{exc}") from None
            e.controller.set_framework(name, change.get("weight"), quota)
            e.fleet.refresh()
            return e.service.framework(name).model_dump(mode="json")


def _finish_revert(e: Embedded, name: str) -> None:
    """A failed deployment reverting by itself: embedded, it moves only while a command runs,
    so this one sees the revert through before it returns."""
    deployment = e.controller.store.deployment(name)
    job = e.controller.store.job(name)
    if deployment is not None and deployment.active and deployment.revert and job is not None:
        e.drive(name, job.version)


def _adapt(on_event: Callable[[dict], None]) -> Callable[[Event], None]:
    return lambda event: on_event(event.to_json())


def _outcome(outcome: Any, e: Embedded, name: str) -> dict | None:
    if outcome is None:
        return None
    _, version = e.controller.outcome(name)
    return {"code": outcome.code, "message": outcome.message, "version": version}
