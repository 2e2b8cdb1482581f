"""/ui: the dashboard's pages. Each page is rendered whole; `?part=1` gives only its live part,
which the page's script fetches again whenever the event stream says something changed.

Signing in: `/ui?token=...` (the link `meso controller` prints) or the form at /ui/login set
the cookie and redirect to a URL without the token; without it every page is the login page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from meso_agentless import __version__
from meso_agentless.api.auth import require_same_origin, token_matches
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.loop import NotFound
from meso_agentless.controller.taskinfo import task_detail
from meso_agentless.ui import pages
from meso_agentless.ui.session import end_session, set_session, signed_in

HERE = Path(__file__).parent
STATIC = HERE / "static"
CHART_JS = STATIC / "vendor" / "chart.umd.min.js"
MAX_FORM = 4096
HEADERS = {
    # nothing from elsewhere, no inline script; styles inline only for the bars' widths
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "same-origin",  # Origin: null otherwise, and that is refused
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("meso_agentless.ui", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
)
templates.filters["amount"] = lambda value, resource: pages.amount(resource, value)
templates.filters["when"] = pages.when
templates.globals["version"] = __version__
templates.globals["systemd_names"] = {  # a unit's fields as the host's systemd calls them
    "unit": "Id", "active": "ActiveState", "sub": "SubState", "description": "Description",
    "memory_max": "MemoryMax", "millicpus": "CPUQuota", "tasks_max": "TasksMax",
    "restarts": "NRestarts", "exit_code": "ExecMainStatus",
}  # fmt: skip

router = APIRouter(prefix="/ui", include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]


def render(name: str, status: int = 200, **values: object) -> HTMLResponse:
    html = templates.get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def login_page(message: str | None = None, status: int = 401) -> HTMLResponse:
    return render("login.html", status=status, message=message, page="login")


def page(request: Request, name: str, part: bool, title: str, **values: object) -> HTMLResponse:
    """The whole page, or (part) only its live part."""
    if part:
        return render(f"parts/{name}.html", **values)
    return render(f"{name}.html", page=name, title=title, part_url=request.url.path + "?part=1",
                  charts=CHART_JS.exists(), **values)  # fmt: skip


@router.get("")
def cluster(request: Request, ctx: Ctx, token: str | None = None, part: bool = False) -> Response:
    if token is not None:  # the printed link: sign in, then drop the token from the address
        if not token_matches(token, ctx.token):
            return login_page("That token is not this controller's.")
        response = RedirectResponse("/ui", status_code=303, headers=HEADERS)
        set_session(response, request, ctx.token)
        return response
    if not signed_in(request):
        return login_page()
    return page(request, "cluster", part, "Cluster", view=pages.cluster_page(ctx.service))


@router.get("/login")
def login_form(request: Request) -> Response:
    if signed_in(request):
        return RedirectResponse("/ui", status_code=303, headers=HEADERS)
    return login_page(status=200)


@router.post("/login")
async def login(request: Request, ctx: Ctx) -> Response:
    if request.headers.get("origin") is not None:
        require_same_origin(request)
    body = await request.body()
    if len(body) > MAX_FORM:
        return login_page("token: too long")
    given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
    if not token_matches(given, ctx.token):
        return login_page("That token is not this controller's.")
    response = RedirectResponse("/ui", status_code=303, headers=HEADERS)
    set_session(response, request, ctx.token)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    require_same_origin(request)
    response = RedirectResponse("/ui/login", status_code=303, headers=HEADERS)
    end_session(response, request)
    return response


@router.get("/sharing")
def sharing(request: Request, ctx: Ctx, part: bool = False) -> Response:
    if not signed_in(request):
        return login_page()
    view = pages.cluster_page(ctx.service)
    return page(request, "sharing", part, "Sharing", view=view,
                interval=ctx.history.interval)  # fmt: skip


@router.get("/jobs")
def jobs(request: Request, ctx: Ctx, part: bool = False) -> Response:
    if not signed_in(request):
        return login_page()
    listed = sorted(ctx.service.jobs().jobs, key=lambda j: -j.submitted)
    return page(request, "jobs", part, "Jobs", jobs=listed)


@router.get("/jobs/{name}")
async def job(request: Request, name: str, ctx: Ctx, part: bool = False) -> Response:
    if not signed_in(request):
        return login_page()
    try:
        view = await run_in_threadpool(ctx.service.job, name)
    except NotFound as exc:
        return render("missing.html", status=404, page="jobs", title="Not found",
                      message=str(exc))  # fmt: skip
    tasks = sorted({t.task for t in view.tasks} | {u.task for u in view.unplaced}
                   | {t["name"] for t in view.spec.get("tasks", [])})  # fmt: skip
    counts = {t["name"]: int(t.get("count", 1)) for t in view.spec.get("tasks", [])}
    return page(request, "job", part, f"Job {name}", job=view, task_names=tasks, counts=counts)


@router.get("/jobs/{name}/tasks/{task}/{index}")
async def task(request: Request, name: str, task: str, index: int, ctx: Ctx,
               part: bool = False) -> Response:  # fmt: skip
    if not signed_in(request):
        return login_page()
    try:
        detail = await run_in_threadpool(task_detail, ctx.service, ctx.events, name, task, index)
    except NotFound as exc:
        return render("missing.html", status=404, page="jobs", title="Not found",
                      message=str(exc))  # fmt: skip
    return page(request, "task", part, f"{name} {task}/{index}", detail=detail, index=index)


def install(app: FastAPI) -> None:
    """Mount the dashboard on the API's app: its pages, and its static files (public: scripts,
    styles and the chart library, nothing about the cluster)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC, check_dir=False), name="ui-static")
