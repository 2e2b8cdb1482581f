"""Hosts where nothing changed since the controller last judged their tasks: skipped by a cycle.

A host's attempts are judged again (controller.loop's `_observe`) only when something they are
judged by may have moved: the host's report (its state, boot, and the hash of its units' states
the fleet keeps), its stored boot, the task rows (re-read after any write, ours or another
connection's), the set of active job runs, or an action of ours on a unit since the last look.
A host whose last judgement found something to do (a status to record, a unit to stop or clean
up, a report older than our last action) is never quiet: it is looked at every cycle until it
is.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

from meso_agentless.controller.fleet import HostView


class QuietHosts:
    """The hosts whose last judgement found nothing to do, and what it was made on."""

    def __init__(self) -> None:
        self._basis: Hashable = None  # (rows read, active runs) the judgements were made on
        self._keys: dict[str, tuple] = {}  # host -> its report and stored boot, as judged
        self.since = -math.inf  # monotonic time of the last judgement

    def clear(self) -> None:
        self._basis, self._keys = None, {}

    def quiet(
        self,
        basis: Hashable,
        views: Mapping[str, HostView],
        boots: Mapping[str, str],
        acted: Mapping[str, float],
        now: float,
    ) -> set[str]:
        """The hosts to skip now: judged quiet on the same basis, their report unchanged, and
        no unit acted on since (an action anywhere: every host is judged again)."""
        since, self.since = self.since, now
        if basis != self._basis or any(t >= since for t in acted.values()):
            self._basis, self._keys = basis, {}
            return set()
        return {h for h, key in self._keys.items() if h in views and _key(views[h], boots) == key}

    def judged(
        self, views: Mapping[str, HostView], boots: Mapping[str, str], busy: set[str]
    ) -> None:
        """After a judgement of these hosts: the ones with nothing to do are quiet."""
        for name, view in views.items():
            if name in busy:
                self._keys.pop(name, None)
            else:
                self._keys[name] = _key(view, boots)


def _key(view: HostView, boots: Mapping[str, str]) -> tuple:
    return (view.state, view.boot, view.marks, boots.get(view.name))
