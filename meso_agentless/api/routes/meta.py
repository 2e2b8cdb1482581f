"""/v1/health (no token) and /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.api.metrics import CONTENT_TYPE
from meso_agentless.controller.views import Health

open_router = APIRouter(tags=["meta"])
router = APIRouter(dependencies=[Depends(require_token)], tags=["meta"])


@open_router.get("/v1/health", response_model=Health)
def health(ctx: Annotated[ApiContext, Depends(context)]) -> Health:
    """Liveness: answers while the controller serves."""
    return ctx.service.health()


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus exposition: tasks and hosts by state, cycle and sample durations, shares."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)
