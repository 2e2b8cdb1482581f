"""What a standby controller answers: reads it can make from the database, and for everything
else a redirect to the leader.

Choice: redirect (307, which keeps the method and body), not proxy: the client talks to the
leader itself, a standby holds no request open for it, and nothing is sent twice if a standby
dies mid-way. The token is checked before the leader's address is given out. The CLI does not
follow the Location: it goes on to the next address of MESO_ADDR (so the token only ever goes
where the user sent it); curl -L and httpx follow it. With no leader at the moment, 503.

A standby serves itself: GET /v1/health (role, epoch, leader), GET /v1/jobs, /v1/jobs/NAME
(from the database; the leader's fresher view of hosts is not there: those go to the leader)
and GET /metrics (its own, so a scraper that follows redirects never files the leader's figures
under a standby).
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.middleware.base import BaseHTTPMiddleware

from meso_agentless.controller.leadership import NotLeader

OPEN = {"/v1/health"}
READS = re.compile(r"/v1/jobs(/[^/]+)?|/metrics")  # /metrics: this process's own
ROLE_HEADER = "X-Meso-Role"


class StandbyRedirect(BaseHTTPMiddleware):
    def __init__(self, app: Any, leadership: Any, token: str, own: str) -> None:
        super().__init__(app)
        self.leadership = leadership
        self.token = token
        self.own = own

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        leading, _ = self.leadership.state()
        path = request.url.path
        if leading or path in OPEN or (request.method == "GET" and READS.fullmatch(path)):
            return await call_next(request)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self.token.encode()):  # fmt: skip
            return await call_next(request)  # the route answers 401 as it always does
        return standby_answer(self.leadership.leader_addr(), self.own, request)


def standby_answer(
    leader: str | None, own: str, request: Request
) -> JSONResponse | RedirectResponse:
    """307 to the leader; 503 when there is none, or the database still names this one (its
    lease ran out here, and is not renewed yet or taken by another)."""
    if leader is None or leader == own:
        return JSONResponse({"error": "no leader at the moment (a standby answers): try again "
                                      "in a few seconds"}, status_code=503,
                            headers={ROLE_HEADER: "standby", "Retry-After": "2"})  # fmt: skip
    target = leader.rstrip("/") + request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(target, status_code=307, headers={ROLE_HEADER: "standby"})


def install(app: FastAPI, leadership: Any, token: str, own: str) -> None:
    """Add the standby's behaviour to the API (a leader's answers are unchanged); `own`: this
    controller's advertised address."""
    app.add_middleware(StandbyRedirect, leadership=leadership, token=token, own=own)

    @app.exception_handler(NotLeader)
    async def _not_leader(request: Request, exc: NotLeader) -> Any:
        # the lease ran out while the request waited: the leader may be another one now
        return standby_answer(leadership.leader_addr(), own, request)
