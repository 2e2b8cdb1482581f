"""Every error as `{"error": "..."}` with a 4xx naming the field: never a traceback, never a 500
for anything a client sends."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from meso_agentless.controller.loop import JobConflict, NotFound
from meso_agentless.controller.runner import Stopped
from meso_agentless.controller.schedulers import NotSubscribed, OfferConflict
from meso_agentless.controller.service import HostUnreachable
from meso_agentless.errors import Unplaceable, UsageError

log = logging.getLogger("meso.api")


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: object):
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def field_message(errors: list) -> str:
    """pydantic's first error as `field.path: reason` (body/query prefixes left out)."""
    first = errors[0] if errors else {}
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return error(422, field_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound):
        return error(404, str(exc))

    @app.exception_handler(NotSubscribed)
    async def _not_subscribed(_request: Request, exc: NotSubscribed):
        return error(404, str(exc))

    @app.exception_handler(OfferConflict)
    async def _offer_conflict(_request: Request, exc: OfferConflict):
        return error(409, str(exc))

    @app.exception_handler(JobConflict)
    async def _conflict(_request: Request, exc: JobConflict):
        return error(409, str(exc))

    @app.exception_handler(Unplaceable)
    async def _unplaceable(_request: Request, exc: Unplaceable):
        return error(422, str(exc), unplaced=exc.unplaced)

    @app.exception_handler(UsageError)
    async def _usage(_request: Request, exc: UsageError):
        return error(422, str(exc))

    @app.exception_handler(Stopped)
    async def _stopped(_request: Request, exc: Stopped):
        return error(503, str(exc))

    @app.exception_handler(HostUnreachable)
    async def _unreachable(_request: Request, exc: HostUnreachable):
        return error(503, str(exc))

    @app.exception_handler(TimeoutError)
    async def _busy(_request: Request, exc: TimeoutError):
        return error(503, "the controller is busy; the change may still happen: look again")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, "internal error (the controller's log has the details)")
