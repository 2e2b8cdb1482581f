"""/v1/history: the cluster's sharing over the last hour, as the controller kept it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.views import ShareHistoryView, SharePointView

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["frameworks"])


@router.get("/history", response_model=ShareHistoryView)
def history(
    ctx: Annotated[ApiContext, Depends(context)],
    since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
) -> ShareHistoryView:
    """Each framework's dominant and weighted share, its fair share, what it holds, and the
    cluster's capacity, allocation and use, over the last hour (`since`: only later points)."""
    kept = ctx.history
    points = [SharePointView(time=p.time, frameworks={k: dict(v) for k, v in p.frameworks.items()},
                             cluster=dict(p.cluster)) for p in kept.points(since)]  # fmt: skip
    return ShareHistoryView(interval=kept.interval, window=kept.window, points=points)
