"""POST /v1/plan/job: what submitting one job file would do to the job the controller holds (the
action, the field-level diff, where what starts would go). Nothing is stored or launched: what
`meso.agentless.meso_job` asks in Ansible's check mode."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.api.routes.jobs import JOB_BODY, job_from_body
from meso_agentless.controller.jobplan import plan_job

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["plan"])
Ctx = Annotated[ApiContext, Depends(context)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FieldChange(BaseModel):
    path: str  # as in error messages: tasks[0].resources.cpus
    kind: Literal["changed", "added", "removed"]
    before: Any = None
    after: Any = None


class ScaleStep(BaseModel):
    task: str
    before: int
    after: int


class JobRevision(BaseModel):
    state: str
    run: int
    version: int


class UpdatePlan(BaseModel):
    """What a deployment of the new version does: `replace` instances of `tasks`,
    `max_parallel` at a time (`canary` first); `fits`: the first of them fit beside the old
    ones on the cluster as it is."""

    from_version: int
    to_version: int
    replace: int
    max_parallel: int
    canary: int
    fits: bool
    tasks: list[str]
    summary: str


class JobPlan(BaseModel):
    """`action`: create (a new job), rerun (a new run of an ended one), none (active, or done,
    with this spec), scale (only counts differ), update (an active service with another spec:
    POST /v1/jobs starts a deployment, see `update`), replace (anything else differs while a
    job of another type is active: POST /v1/jobs answers 409; kill it first)."""

    job: str
    action: Literal["create", "rerun", "none", "scale", "update", "replace"]
    update: UpdatePlan | None = None
    reason: str
    current: JobRevision | None
    changes: list[FieldChange]
    scale: list[ScaleStep]
    spec: dict[str, Any]  # the file as the controller would store it (defaults filled in)
    running_spec: dict[str, Any] | None
    placements: list[_Open]  # what would start, as in POST /v1/plan
    unplaced: list[_Open]
    shares: dict[str, float]
    never_placeable: list[_Open]  # submitting would be refused (422) for these
    unreachable: dict[str, str]


@router.post("/plan/job", response_model=JobPlan, openapi_extra=JOB_BODY)
async def plan_one_job(request: Request, ctx: Ctx) -> dict:
    """A job file (JSON or YAML, validated like POST /v1/jobs) against the job of its name."""
    job = job_from_body(await request.body(), request.headers.get("content-type", ""))
    return await run_in_threadpool(plan_job, ctx.service, job)
