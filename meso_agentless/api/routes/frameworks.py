"""/v1/frameworks/NAME/...: the scheduler API, for frameworks that schedule their own tasks.

`subscribe` opens the framework's event stream (Server-Sent Events: subscribed, offers,
rescind, update, heartbeat, error); the other calls answer at once, and what they cause
(offers, updates) comes on the stream. See controller.schedulers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.api.errors import field_message
from meso_agentless.api.routes.jobs import parse_json
from meso_agentless.controller.events import Event
from meso_agentless.controller.schedulers import HEARTBEAT, MAX_FAILOVER, MAX_REFUSE, Schedulers
from meso_agentless.errors import UsageError
from meso_agentless.spec import NAME_PATTERN
from meso_agentless.taskspec import framework_task

router = APIRouter(prefix="/v1/frameworks/{name}", dependencies=[Depends(require_token)],
                   tags=["scheduler API"])  # fmt: skip
Ctx = Annotated[ApiContext, Depends(context)]
FrameworkName = Annotated[str, Path(pattern=NAME_PATTERN)]
OfferId = Annotated[str, Field(max_length=64)]
OfferIds = Annotated[list[OfferId], Field(min_length=1, max_length=1000)]
T = TypeVar("T")
MAX_TASKS = 1000


def sse(event: Event) -> bytes:
    """One event for a framework: its fields (and the job, for a task's) as the data."""
    data = {**event.data, "job": event.job} if event.job else event.data
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n".encode()


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Subscribe(_Request):
    failover_timeout: Annotated[float, Field(ge=0, le=MAX_FAILOVER)] | None = None


class Decline(_Request):
    offer_ids: OfferIds
    refuse_seconds: Annotated[float, Field(ge=0, le=MAX_REFUSE)] | None = None


class Kill(_Request):
    task_id: Annotated[str, Field(min_length=1, max_length=63)]


class Reconcile(_Request):
    task_ids: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=10_000)] = []


def _change(ctx: ApiContext, call: Callable[[Schedulers], T]) -> T:
    """Run `call` on the controller's thread, with its schedulers."""
    return ctx.change(lambda: call(ctx.service.controller.schedulers))


async def changed(ctx: ApiContext, call: Callable[[Schedulers], T]) -> T:
    return await run_in_threadpool(_change, ctx, call)


@router.post("/subscribe", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}},
                        409: {"description": "the name is taken by jobs from files"}})  # fmt: skip
async def subscribe(name: FrameworkName, request: Request, ctx: Ctx) -> StreamingResponse:
    """Register (or fail over) the framework and stream its events; a newer subscription of
    the same framework takes over and this stream ends with an `error` event."""
    body = await request.body()
    try:
        options = Subscribe.model_validate(parse_json(body) if body.strip() else {})
    except ValidationError as exc:
        raise UsageError(field_message(list(exc.errors()))) from None
    loop = asyncio.get_running_loop()
    stream = await changed(ctx, lambda s: s.subscribe(name, options.failover_timeout, loop))
    schedulers = ctx.service.controller.schedulers

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            while not ctx.shutting_down():
                try:
                    event = await asyncio.wait_for(stream.queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield b"event: heartbeat\ndata: {}\n\n"
                    continue
                if stream.overflowed:  # it did not keep up: it must subscribe and reconcile
                    yield (
                        b'event: error\ndata: {"message": "too many events unread: '
                        b'subscribe again and reconcile"}\n\n'
                    )
                    return
                if event is None:
                    return
                yield sse(event)
                if event.kind == "error":
                    return
        finally:
            schedulers.detach(name, stream)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


@router.post("/accept", responses={409: {"description": "the tasks do not fit the offers"}})
async def accept(name: FrameworkName, request: Request, ctx: Ctx) -> dict[str, Any]:
    """Launch tasks on offers: all of them, or (4xx) none, and the offers go back either way.
    Resources the tasks do not use go back to the pool."""
    data = parse_json(await request.body())
    if not isinstance(data, dict):
        raise UsageError("body: must be an object with offer_ids and tasks")
    unknown = next((k for k in data if k not in ("offer_ids", "tasks")), None)
    if unknown is not None:
        raise UsageError(f"{unknown}: unknown field")
    ids = data.get("offer_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise UsageError("offer_ids: must be a non-empty list of offer ids")
    tasks = data.get("tasks")
    try:
        if not isinstance(tasks, list) or not tasks or len(tasks) > MAX_TASKS:
            raise UsageError(f"tasks: must be a list of 1 to {MAX_TASKS} tasks")
        checked = [framework_task(name, t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    except UsageError:
        await changed(ctx, lambda s: s.release(name, ids))  # nothing launched, offers back
        raise
    launched = await changed(ctx, lambda s: s.accept(name, ids, checked))
    return {"launched": launched}


@router.post("/decline")
async def decline(name: FrameworkName, request: Decline, ctx: Ctx) -> dict[str, Any]:
    """Give offers back; their hosts are not offered again for refuse_seconds (default 5),
    unless they could offer more than was declined."""
    await changed(ctx, lambda s: s.decline(name, request.offer_ids, request.refuse_seconds))
    return {"declined": len(request.offer_ids)}


@router.post("/suppress")
async def suppress(name: FrameworkName, ctx: Ctx) -> dict[str, Any]:
    """No more offers until revive."""
    await changed(ctx, lambda s: s.suppress(name))
    return {"suppressed": True}


@router.post("/revive")
async def revive(name: FrameworkName, ctx: Ctx) -> dict[str, Any]:
    """Offers again, and every host declined before is offered again."""
    await changed(ctx, lambda s: s.revive(name))
    return {"suppressed": False}


@router.post("/kill")
async def kill(name: FrameworkName, request: Kill, ctx: Ctx) -> dict[str, Any]:
    """Stop one task; its end comes as an `update`."""
    stopped = await changed(ctx, lambda s: s.kill(name, request.task_id))
    return {"stopped": stopped}


@router.post("/reconcile")
async def reconcile(name: FrameworkName, ctx: Ctx, request: Reconcile | None = None) -> dict:
    """The latest state of each task named (none: of every task still running), as `update`
    events on the stream."""
    ids = request.task_ids if request is not None else []
    count = await changed(ctx, lambda s: s.reconcile(name, ids))
    return {"reconciling": count}


@router.delete("")
async def teardown(name: FrameworkName, ctx: Ctx) -> dict[str, Any]:
    """Kill every task of the framework and forget it."""
    stopped = await changed(ctx, lambda s: s.teardown(name))
    return {"stopped": stopped}
