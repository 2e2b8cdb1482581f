"""What the API's routes need from the running controller, kept in `app.state.ctx`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request

from meso_agentless.controller.events import EventBus
from meso_agentless.controller.history import ShareHistory
from meso_agentless.controller.runner import Runner
from meso_agentless.controller.service import Service

T = TypeVar("T")


@dataclass
class ApiContext:
    service: Service  # reads
    runner: Runner  # changes, on the controller's thread
    events: EventBus
    token: str
    shutting_down: Callable[[], bool] = lambda: False
    history: ShareHistory = field(default_factory=ShareHistory)  # the dashboard's charts
    token_name: str | None = None  # who the token stands for (a job version's submitter)

    def change(self, command: Callable[[], T]) -> T:
        """Run a change on the controller's thread (the one writer)."""
        return self.runner.call(command)


def context(request: Request) -> ApiContext:
    return request.app.state.ctx
