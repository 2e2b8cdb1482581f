"""/v1/jobs/NAME/tasks/TASK/INDEX: one task instance in detail (its unit's limits as set on the
host, every attempt, what the controller said about it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.taskinfo import task_detail
from meso_agentless.controller.views import TaskDetail
from meso_agentless.spec import MAX_COUNT

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["jobs"])


@router.get("/jobs/{name}/tasks/{task}/{index}", response_model=TaskDetail)
def task(
    name: str,
    task: Annotated[str, Path(max_length=63)],
    index: Annotated[int, Path(ge=0, le=MAX_COUNT)],
    ctx: Annotated[ApiContext, Depends(context)],
) -> TaskDetail:
    return task_detail(ctx.service, ctx.events, name, task, index)
