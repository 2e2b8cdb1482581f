"""The FastAPI application: routers, the token, error shapes, limits, the OpenAPI document at
/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from meso_agentless import __version__
from meso_agentless.api import errors
from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext
from meso_agentless.api.limits import BodyLimit
from meso_agentless.api.metrics import Metrics, RequestCounter
from meso_agentless.api.routes import deployments, events, frameworks, hosts, jobs, meta, queue
from meso_agentless.api.routes import history as history_routes
from meso_agentless.api.routes import plan as job_plan
from meso_agentless.api.routes import tasks as task_routes
from meso_agentless.spec import Job
from meso_agentless.ui import routes as dashboard


def create_app(ctx: ApiContext, metrics: Metrics) -> FastAPI:
    app = FastAPI(
        title="meso-agentless controller",
        version=__version__,
        summary="Share a few large servers between frameworks, over SSH and systemd.",
        openapi_url=None,  # served below, behind the token like every route but /v1/health
        docs_url=None,  # the interactive pages load scripts from a CDN: not here
        redoc_url=None,
        redirect_slashes=False,  # /v1/jobs/ is a 404, not a redirect around the token
    )
    app.state.ctx = ctx
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestCounter, metrics=metrics)
    routers = (meta.open_router, meta.router, hosts.router, jobs.router, events.router,
               frameworks.router, queue.router)  # fmt: skip
    for router in routers:
        app.include_router(router)
    app.include_router(job_plan.router)
    app.include_router(deployments.router)
    for router in (history_routes.router, task_routes.router):  # what the dashboard reads
        app.include_router(router)
    dashboard.install(app)  # /ui
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, with the job file's schema (what POST /v1/jobs takes)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                               routes=app.routes)  # fmt: skip
        _, schemas = models_json_schema([(Job, "validation")],
                                        ref_template="#/components/schemas/{model}")  # fmt: skip
        document.setdefault("components", {}).setdefault("schemas", {}).update(
            schemas.get("$defs", {})
        )
        app.openapi_schema = document
    return app.openapi_schema
