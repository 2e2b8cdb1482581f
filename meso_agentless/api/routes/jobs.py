"""/v1/jobs: submit (JSON or YAML, validated like a job file), list, one job, scale, kill, logs;
and /v1/plan."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.views import JobList, JobView, KillResult, TriggerResult
from meso_agentless.errors import MesoError, UsageError
from meso_agentless.spec import MAX_COUNT, Job, job_from_data, job_from_text

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["jobs"])
log = logging.getLogger("meso.api")
Ctx = Annotated[ApiContext, Depends(context)]
FIRST_CYCLE = 3.0  # seconds a submit or scale waits for its first cycle, launches included
PLACED = 30.0  # at most, for its placements to be stored (the CLI waits 60 s for an answer)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Job"}},
            "application/yaml": {"schema": {"type": "string", "description": "a job file"}},
        },
    }
}


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    task: str
    count: Annotated[int, Field(ge=0, le=MAX_COUNT)]


def parse_json(body: bytes) -> object:
    """JSON text to data; UsageError (one line) on anything that is not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"body: not JSON: {str(exc).splitlines()[0][:200]}") from None


def job_from_body(body: bytes, content_type: str) -> Job:
    kind = content_type.split(";")[0].strip().lower()
    if kind in YAML_TYPES:
        return job_from_text(body)
    if kind not in ("application/json", ""):
        raise UsageError(f"content-type: {kind} is not application/json or application/yaml")
    return job_from_data(parse_json(body))


@router.get("/jobs", response_model=JobList)
def list_jobs(ctx: Ctx) -> JobList:
    return ctx.service.jobs()


@router.post("/jobs", status_code=201, response_model=JobView, openapi_extra=JOB_BODY,
             responses={200: {"description": "the same job was already active, or done "
                                             "(without ?again=true)"},
                        409: {"description": "active with another spec"}})  # fmt: skip
async def submit(request: Request, response: Response, ctx: Ctx, again: bool = False) -> JobView:
    job = job_from_body(await request.body(), request.headers.get("content-type", ""))
    controller = ctx.service.controller

    def command() -> bool:
        before = controller.store.job(job.job)
        row = controller.submit(job, again=again, submitter=ctx.token_name)
        created = before is None or (before.run, before.version) != (row.run, row.version)
        if not created:
            controller.republish(job.job)  # for whoever follows it again
        return created

    if not await run_in_threadpool(then_placed, ctx, command):  # the answer says what it placed
        response.status_code = 200
    return await run_in_threadpool(ctx.service.job, job.job)


def then_placed(ctx: ApiContext, change: Callable[[], bool]) -> bool:
    """Whether `change` (a submit, a scale) changed anything; if it did, a cycle that places
    now follows it, in one command on the controller's thread. Waited for up to FIRST_CYCLE;
    one that takes longer (the launches of thousands of tasks) goes on after the answer, which
    then waits only until its placements are stored (up to PLACED: a client's patience)."""
    placed, changed, controller = threading.Event(), [], ctx.service.controller

    def command() -> None:
        changed.append(change())
        if changed[0]:
            controller.tick(allocate_now=True, on_placed=placed.set)

    cycle = ctx.runner.submit(command)
    cycle.add_done_callback(lambda _cycle: placed.set())
    with contextlib.suppress(TimeoutError):
        cycle.result(FIRST_CYCLE)
    placed.wait(PLACED)
    if cycle.done():
        cycle.result()  # its error, if it failed
    return changed[0]


@router.get("/jobs/{name}", response_model=JobView)
def get_job(name: str, ctx: Ctx) -> JobView:
    return ctx.service.job(name)


@router.delete("/jobs/{name}", response_model=KillResult)
async def kill(name: str, ctx: Ctx) -> KillResult:
    controller = ctx.service.controller
    stopped = await run_in_threadpool(ctx.change, lambda: controller.kill(name))
    return KillResult(job=name, stopped=stopped)


@router.post("/jobs/{name}/trigger", response_model=TriggerResult,
             responses={409: {"description": "not an active cron job"}})  # fmt: skip
async def trigger(name: str, ctx: Ctx) -> TriggerResult:
    """Fire a cron job's timers now, on the hosts holding them (concurrency rules apply)."""
    return await run_in_threadpool(ctx.change, lambda: ctx.service.trigger(name))


@router.post("/jobs/{name}/scale", response_model=JobView)
async def scale(name: str, request: ScaleRequest, ctx: Ctx) -> JobView:
    controller = ctx.service.controller

    def command() -> bool:
        controller.scale(name, request.task, request.count)
        return True

    await run_in_threadpool(then_placed, ctx, command)
    return await run_in_threadpool(ctx.service.job, name)


@router.get("/jobs/{name}/logs", response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
def logs(
    name: str,
    ctx: Ctx,
    task: Annotated[str | None, Query(max_length=63)] = None,
    index: Annotated[int | None, Query(ge=0, le=MAX_COUNT)] = None,
    follow: bool = False,
    lines: Annotated[int, Query(ge=1, le=1_000_000)] = 1000,
    run: Annotated[str | None, Query(max_length=200)] = None,
) -> StreamingResponse:
    """The journal of the job's latest attempts; `follow` streams one instance's; `run` (a
    cron job's run unit, from its `runs`) that run's."""
    if run is not None:
        ctx.service.run_unit(name, run)  # 404 now
    else:
        rows = ctx.service.latest_attempts(name, task, index)  # 404 now, not halfway through
        ctx.service.readable(rows)  # 503 now if a host cannot be reached

    def chunks() -> Iterator[bytes]:
        try:
            yield from ctx.service.logs(name, task, index, follow, lines, run)
        except MesoError as exc:  # the host went away mid-way: the stream ends, the log says why
            log.warning("logs of %s: %s", name, exc)

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: Annotated[list[dict], Field(min_length=1, max_length=100)]


@router.post("/plan", tags=["plan"])
def plan(request: PlanRequest, ctx: Ctx) -> dict:
    """`meso plan` through the controller: where the jobs would go now; nothing is launched."""
    jobs = []
    for i, data in enumerate(request.jobs):
        try:
            jobs.append(job_from_data(data))
        except UsageError as exc:
            raise UsageError(f"jobs[{i}].{exc}") from None
    names = [j.job for j in jobs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"jobs: job {duplicate!r} is given twice")
    return ctx.service.plan(jobs)
