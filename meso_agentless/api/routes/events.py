"""/v1/events: Server-Sent Events of task states, placements, unplaced tasks, hosts, outcomes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from meso_agentless.api.auth import require_token
from meso_agentless.api.context import ApiContext, context
from meso_agentless.controller.events import Event

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["events"])
HEARTBEAT = 15.0


def sse(event: Event) -> bytes:
    return (f"id: {event.id}\nevent: {event.kind}\n"
            f"data: {json.dumps(event.to_json())}\n\n").encode()  # fmt: skip


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
async def events(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    job: Annotated[str | None, Query(max_length=63)] = None,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
) -> StreamingResponse:
    """Events as they happen (`job`: only that job's). Reconnecting with Last-Event-ID replays
    the ones missed, of those the controller still holds."""
    subscription, missed = ctx.events.subscribe(job, loop=asyncio.get_running_loop(),
                                                after=last_event_id)  # fmt: skip

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": subscribed\nretry: 1000\n\n"
            for event in missed:
                yield sse(event)
            while not ctx.shutting_down():
                try:
                    event = await asyncio.wait_for(subscription.queue.get(), HEARTBEAT)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": heartbeat\n\n"
                    continue
                if event is None or subscription.overflowed:
                    return
                yield sse(event)
        finally:
            ctx.events.unsubscribe(subscription)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip
