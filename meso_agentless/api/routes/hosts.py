"""/v1/hosts and /v1/frameworks: what each host holds, and each framework's share."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.views import (
    Cluster,
    FrameworkInfo,
    FrameworkList,
    HostInfo,
    HostList,
)
from meso_agentless.core.model import MAX_WEIGHT, MIN_WEIGHT
from meso_agentless.core.resources import ResourceError, parse_resources
from meso_agentless.errors import UsageError
from meso_agentless.spec import parse_duration

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("/hosts", response_model=HostList, tags=["hosts"])
def hosts(ctx: Ctx) -> HostList:
    return ctx.service.hosts()


@router.get("/hosts/{name}", response_model=HostInfo, tags=["hosts"])
def host(name: str, ctx: Ctx) -> HostInfo:
    return ctx.service.host(name)


class DrainRequest(BaseModel):
    """How long batch tasks may run on before they are stopped and placed elsewhere."""

    model_config = ConfigDict(extra="forbid")
    deadline: int | str = "10m"


@router.post("/hosts/{name}/drain", response_model=HostInfo, tags=["hosts"])
async def drain(name: str, request: DrainRequest, ctx: Ctx) -> HostInfo:
    """Move everything off a host: nothing new goes there; service instances move one at a
    time (the new one up first); batch tasks may finish until the deadline."""
    try:
        seconds = parse_duration(request.deadline)
    except ValueError as exc:
        raise UsageError(f"deadline: {exc}") from None
    controller = ctx.service.controller
    await run_in_threadpool(ctx.change, lambda: (controller.drain(name, seconds),
                                                 controller.tick()))  # fmt: skip
    return ctx.service.host(name)


@router.delete("/hosts/{name}/drain", response_model=HostInfo, tags=["hosts"])
async def undrain(name: str, ctx: Ctx) -> HostInfo:
    controller = ctx.service.controller
    await run_in_threadpool(ctx.change, lambda: (controller.undrain(name), controller.tick()))
    return ctx.service.host(name)


@router.get("/cluster", response_model=Cluster, tags=["hosts"])
def cluster(ctx: Ctx) -> Cluster:
    """Hosts by state, and whether tasks of unreachable hosts are replaced (paused while more
    than a third of the hosts went unreachable at once: the controller may be the one cut off)."""
    return ctx.service.cluster()


@router.post("/cluster/allow-replacements", response_model=Cluster, tags=["hosts"])
async def allow_replacements(ctx: Ctx) -> Cluster:
    """An operator's word that the hosts are really gone: replace their tasks now."""
    controller = ctx.service.controller
    await run_in_threadpool(ctx.change, controller.allow_replacements)
    return ctx.service.cluster()


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
    """A new weight, a new quota (a maximum per resource; zero is a limit; null: none), or
    both."""

    model_config = ConfigDict(extra="forbid", strict=True)
    weight: Annotated[float, Field(ge=MIN_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False)] | None = None
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
    elif "quota" in change.model_fields_set:
        quota = {}  # no limits
    if change.weight is None and quota is None:
        raise UsageError("give weight, quota or both")
    controller = ctx.service.controller
    await run_in_threadpool(ctx.change, lambda: controller.set_framework(name, change.weight,
                                                                         quota))  # fmt: skip
    return ctx.service.framework(name)
