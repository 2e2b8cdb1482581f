"""/v1/jobs/NAME/versions, /v1/jobs/NAME/deployment (promote, fail) and /v1/jobs/NAME/revert:
a service's versions and the deployments between them (controller.deployments)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.views import DeploymentView, JobView, VersionList

router = APIRouter(prefix="/v1/jobs", dependencies=[Depends(require_token)], tags=["jobs"])
Ctx = Annotated[ApiContext, Depends(context)]
CONFLICT = {409: {"description": "no deployment under way (or nothing to promote)"}}


class RevertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Annotated[int, Field(ge=1)]


@router.get("/{name}/versions", response_model=VersionList)
def versions(name: str, ctx: Ctx) -> VersionList:
    """Every version of the job's spec: when, by whom, and what changed from the one before."""
    return ctx.service.controller.deployer.versions_view(name)


@router.get("/{name}/deployment", response_model=DeploymentView)
def deployment(name: str, ctx: Ctx) -> DeploymentView:
    """The job's latest deployment and its progress."""
    return ctx.service.controller.deployer.deployment_view(name)


@router.post("/{name}/deployment/promote", response_model=DeploymentView, responses=CONFLICT)
async def promote(name: str, ctx: Ctx) -> DeploymentView:
    """Promote the deployment's healthy canaries: the rest of the instances are replaced."""
    deployer = ctx.service.controller.deployer

    def command() -> DeploymentView:
        deployer.promote(name)
        ctx.service.controller.tick()
        return deployer.deployment_view(name)

    return await run_in_threadpool(ctx.change, command)


@router.post("/{name}/deployment/fail", response_model=DeploymentView, responses=CONFLICT)
async def fail(name: str, ctx: Ctx) -> DeploymentView:
    """Fail the deployment under way (its job's auto_revert then applies)."""
    deployer = ctx.service.controller.deployer

    def command() -> DeploymentView:
        deployer.fail(name)
        return deployer.deployment_view(name)

    return await run_in_threadpool(ctx.change, command)


@router.post("/{name}/revert", response_model=JobView,
             responses={409: {"description": "not an active service, or at it"}})  # fmt: skip
async def revert(name: str, request: RevertRequest, ctx: Ctx) -> JobView:
    """Run an earlier version again: stored as the next version, rolled out by a deployment."""
    controller = ctx.service.controller

    def command() -> JobView:
        controller.deployer.revert(name, request.version, ctx.token_name)
        controller.tick(allocate_now=True)
        return ctx.service.job(name)

    return await run_in_threadpool(ctx.change, command)
