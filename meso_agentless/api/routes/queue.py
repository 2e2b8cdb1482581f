"""/v1/queue and /v1/jobs/NAME/explain: what waits, in which order, and why (per host)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
Ctx = Annotated[ApiContext, Depends(context)]
Name = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


@router.get("/queue", tags=["jobs"])
def queue(ctx: Ctx, framework: Name = None) -> dict[str, Any]:
    """Pending task groups in placing order (position, waiting time, reason) and per framework
    its guarantee, limit, allocation, what it borrows and lends, its dominant share."""
    return ctx.service.queue(framework)


@router.get("/jobs/{name}/explain", tags=["jobs"])
def explain(ctx: Ctx, name: str, task: Name = None) -> dict[str, Any]:
    """For each task of the job (or `task`): every host, fits or the first reason not."""
    return ctx.service.explain(name, task)
