"""/v1/hosts and /v1/frameworks: what each host holds, and each framework's share."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.loop import NotFound
from meso_agentless.controller.views import FrameworkInfo, FrameworkList, HostInfo, HostList
from meso_agentless.core.resources import ResourceError, parse_resources
from meso_agentless.errors import UsageError

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("/hosts", response_model=HostList, tags=["hosts"])
def hosts(ctx: Ctx) -> HostList:
    return ctx.service.hosts()


@router.get("/hosts/{name}", response_model=HostInfo, tags=["hosts"])
def host(name: str, ctx: Ctx) -> HostInfo:
    for info in ctx.service.hosts().hosts:
        if info.host == name:
            return info
    raise NotFound(f"no host {name!r}")


@router.get("/frameworks", response_model=FrameworkList, tags=["frameworks"])
def frameworks(ctx: Ctx) -> FrameworkList:
    return ctx.service.frameworks()


class Stopped(BaseModel):
    stopped: list[dict]


@router.post("/gc", response_model=Stopped, tags=["hosts"])
async def gc(ctx: Ctx) -> Stopped:
    """Stop every unit of meso's form that no job claims (reported, never adopted)."""
    controller = ctx.service.controller
    return Stopped(stopped=await run_in_threadpool(ctx.change, controller.gc))


class FrameworkChange(BaseModel):
    """A new weight, a new quota (a maximum per resource; zero is a limit), or both."""

    model_config = ConfigDict(extra="forbid")
    weight: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = None
    quota: dict[str, float | int | str] | None = None


@router.patch("/frameworks/{name}", response_model=FrameworkInfo, tags=["frameworks"])
async def change_framework(name: str, change: FrameworkChange, ctx: Ctx) -> FrameworkInfo:
    ctx.service.known_framework(name)  # 404 for a framework nobody declared or uses
    quota = None
    if change.quota is not None:
        try:
            quota = parse_resources(change.quota, "quota", keep_zeros=True)
        except ResourceError as exc:
            raise UsageError(str(exc)) from None
    if change.weight is None and quota is None:
        raise UsageError("give weight, quota or both")
    controller = ctx.service.controller
    await run_in_threadpool(ctx.change, lambda: controller.set_framework(name, change.weight,
                                                                         quota))  # fmt: skip
    return ctx.service.framework(name)
