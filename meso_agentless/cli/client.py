"""The CLI as a client of `meso controller` (MESO_ADDR): the API over HTTP, standard library only
so a command starts and answers within 0.1 s (plain answers go over cli.wire, streams over
http.client).

Several addresses (comma-separated) are tried in order until one answers. A standby controller
(several on one PostgreSQL state) answers with a redirect to the leader, or 503 while there is
none: the CLI goes on to the leader's address if it is one of MESO_ADDR's (first), else to the
next (the token only ever goes to MESO_ADDR's addresses). Errors come back as one line: a 4xx is
bad input (exit 2), anything else is exit 1.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from meso_agentless.errors import MesoError, Unplaceable, UsageError

if TYPE_CHECKING:
    import http.client

    from meso_agentless.spec import Job

TIMEOUT = 60.0  # for an answer (a submit runs a cycle first)
CONNECT_TIMEOUT = 3.0  # a controller that does not take the connection: the next one is tried
FAILOVER_WAIT = 60.0  # following a job: how long to wait for a new leader when one goes


class ApiError(MesoError):
    """The controller answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = 2 if 400 <= status < 500 else 1


class Remote:
    """The controller's API, for the CLI's commands."""

    def __init__(self, addrs: tuple[str, ...], token: str, timeout: float = TIMEOUT) -> None:
        self.addrs = addrs
        self.token = token
        self.timeout = timeout

    # -- plumbing ------------------------------------------------------------------------------

    def _headers(self, payload: bytes | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        """A request with a JSON answer, to the first controller that takes it (over
        cli.wire: no http.client to import)."""
        from meso_agentless.cli import wire

        payload = None if body is None else json.dumps(body).encode()
        reasons: list[str] = []
        queue = list(self.addrs)
        while queue:
            addr = queue.pop(0)
            host, port, tls = _where(addr)
            try:
                answer = wire.exchange(host, port, tls, method, path, self._headers(payload),
                                       payload, CONNECT_TIMEOUT, self.timeout)  # fmt: skip
            except OSError as exc:
                reasons.append(f"{addr}: {exc.strerror or exc}")
                continue
            if answer.headers.get("x-meso-role") == "standby":
                _to_leader(addr, answer.headers.get("location"), queue, reasons)
                continue
            kind = answer.headers.get("content-type", "")
            if not kind.startswith("application/json"):
                reasons.append(f"{addr}: not a meso controller (HTTP {answer.status})")
                continue
            if answer.status >= 400:
                _raise_for(answer.status, answer.body)
            try:
                return json.loads(answer.body)
            except ValueError as exc:
                raise MesoError(f"the controller sent something that is not JSON: {exc}") from None
        raise MesoError("cannot reach the controller: " + "; ".join(reasons))

    def _open(
        self, method: str, path: str, body: Any = None, timeout: float | None = TIMEOUT
    ) -> http.client.HTTPResponse:
        """A streamed answer (logs, events), from the first controller that takes it."""
        import http.client

        payload = None if body is None else json.dumps(body).encode()
        reasons: list[str] = []
        queue = list(self.addrs)
        while queue:
            addr = queue.pop(0)
            host, port, tls = _where(addr)
            if tls:
                import ssl

                connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, port, timeout=CONNECT_TIMEOUT, context=ssl.create_default_context()
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
            try:
                connection.connect()
                connection.sock.settimeout(timeout)  # type: ignore[union-attr]
                connection.request(method, path, body=payload, headers=self._headers(payload))
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                reasons.append(f"{addr}: {exc.strerror or exc}" if isinstance(exc, OSError)
                               else f"{addr}: {exc}")  # fmt: skip
                continue
            if response.getheader("x-meso-role") == "standby":
                connection.close()
                _to_leader(addr, response.getheader("location"), queue, reasons)
                continue
            kind = response.getheader("content-type", "")
            if response.status >= 400 and kind.startswith("application/json"):
                raw = response.read()
                connection.close()
                _raise_for(response.status, raw)
            if response.status >= 400 or not kind.startswith(("application/json", "text/")):
                connection.close()
                reasons.append(f"{addr}: not a meso controller (HTTP {response.status})")
                continue
            return response
        raise MesoError("cannot reach the controller: " + "; ".join(reasons))

    # -- operations ----------------------------------------------------------------------------

    def hosts(self) -> dict:
        return self._json("GET", "/v1/hosts")

    def frameworks(self) -> dict:
        return self._json("GET", "/v1/frameworks")

    def queue(self, framework: str | None = None) -> dict:
        query = f"?framework={quote(framework, safe='')}" if framework else ""
        return self._json("GET", f"/v1/queue{query}")

    def explain(self, job: str, task: str | None = None) -> dict:
        query = f"?task={quote(task, safe='')}" if task else ""
        return self._json("GET", f"/v1/jobs/{quote(job, safe='')}/explain{query}")

    def set_framework(self, name: str, change: dict) -> dict:
        return self._json("PATCH", f"/v1/frameworks/{quote(name, safe='')}", change)

    def jobs(self, names: list[str] | None = None) -> dict:
        if not names:
            return self._json("GET", "/v1/jobs")
        return {"jobs": [self.job(n) for n in names]}

    def job(self, name: str) -> dict:
        return self._json("GET", f"/v1/jobs/{quote(name, safe='')}")

    def kill(self, name: str) -> dict:
        return self._json("DELETE", f"/v1/jobs/{quote(name, safe='')}")

    def trigger(self, name: str) -> dict:
        return self._json("POST", f"/v1/jobs/{quote(name, safe='')}/trigger")

    def drain(self, host: str, deadline: str | None) -> dict:
        path = f"/v1/hosts/{quote(host, safe='')}/drain"
        if deadline is None:
            return self._json("DELETE", path)
        return self._json("POST", path, {"deadline": deadline})

    def cluster(self) -> dict:
        return self._json("GET", "/v1/cluster")

    def allow_replacements(self) -> dict:
        return self._json("POST", "/v1/cluster/allow-replacements")

    def gc(self) -> dict:
        return self._json("POST", "/v1/gc")

    def plan(self, jobs: list[Job]) -> dict:
        return self._json("POST", "/v1/plan", {"jobs": [j.model_dump(mode="json") for j in jobs]})

    def plan_job(self, job: Job) -> dict:
        return self._json("POST", "/v1/plan/job", job.model_dump(mode="json"))

    def versions(self, name: str) -> dict:
        return self._json("GET", f"/v1/jobs/{quote(name, safe='')}/versions")

    def deployment(self, name: str) -> dict:
        return self._json("GET", f"/v1/jobs/{quote(name, safe='')}/deployment")

    def deployment_action(self, name: str, action: str, on_event: Callable[[dict], None]) -> tuple:
        """Promote or fail the deployment; a promote follows it to its outcome."""
        path = f"/v1/jobs/{quote(name, safe='')}/deployment/{action}"
        if action != "promote":
            return self._json("POST", path), None
        stream = self._events(name)
        try:
            view = self._json("POST", path)
            outcome = self._follow(self.job(name), stream, on_event, False)
            return view, outcome
        finally:
            stream.close()

    def revert(self, name: str, version: int, on_event: Callable[[dict], None]) -> tuple:
        stream = self._events(name)
        try:
            view = self._json("POST", f"/v1/jobs/{quote(name, safe='')}/revert",
                              {"version": version})  # fmt: skip
            outcome = self._follow(view, stream, on_event, False)
            return self.job(name), outcome
        finally:
            stream.close()

    def logs(
        self,
        name: str,
        task: str | None,
        index: int | None,
        follow: bool,
        lines: int,
        run: str | None = None,
    ) -> Iterator[bytes]:
        import http.client

        query: dict = {"lines": lines, "follow": str(follow).lower()}
        if run is not None:
            query["run"] = run
        if task is not None:
            query["task"] = task
        if index is not None:
            query["index"] = index
        path = f"/v1/jobs/{quote(name, safe='')}/logs?{urlencode(query)}"
        response = self._open("GET", path, timeout=None if follow else TIMEOUT)
        try:
            while chunk := response.read1(65536):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise MesoError(f"the log stream broke off: {exc}") from None
        finally:
            response.close()

    def run(
        self, job: Job, detach: bool, on_event: Callable[[dict], None], again: bool = False
    ) -> tuple[dict, Any]:
        """Submit and follow the job's events until its outcome (or not, with `detach`)."""
        stream = None if detach else self._events(job.job)
        try:
            path = "/v1/jobs?again=true" if again else "/v1/jobs"
            view = self._json("POST", path, job.model_dump(mode="json"))
            outcome = self._follow(view, stream, on_event, detach)
            return (view if outcome is None else self.job(job.job)), outcome
        finally:
            if stream is not None:
                stream.close()

    def scale(self, name: str, task: str, count: int, on_event: Callable[[dict], None]) -> tuple:
        stream = self._events(name)
        try:
            view = self._json("POST", f"/v1/jobs/{quote(name, safe='')}/scale",
                              {"task": task, "count": count})  # fmt: skip
            outcome = self._follow(view, stream, on_event, False)
            return self.job(name), outcome
        finally:
            stream.close()

    def _events(self, name: str) -> http.client.HTTPResponse:
        """The job's event stream, subscribed before anything is changed (nothing is missed)."""
        return self._open("GET", f"/v1/events?{urlencode({'job': name})}", timeout=None)

    def _follow(
        self,
        view: dict,
        stream: http.client.HTTPResponse | None,
        on_event: Callable[[dict], None],
        detach: bool,
    ) -> dict | None:
        """The outcome for the job's version (or later): from the events when following them
        (each is printed, up to the outcome's own), else from the view."""
        version = view["version"]
        if detach or stream is None:
            outcome = view.get("outcome")
            return outcome if outcome is not None and outcome["version"] >= version else None
        import http.client

        try:
            for event in _sse(stream):
                on_event(event)
                data = event.get("data", {})
                if (event.get("kind") == "job" and "code" in data
                        and data.get("version", 0) >= version):  # fmt: skip
                    return {"code": data["code"], "message": data["outcome"],
                            "version": data["version"]}  # fmt: skip
        except (OSError, http.client.HTTPException):  # the controller went mid-answer
            if len(self.addrs) < 2:
                raise
        if len(self.addrs) < 2:
            raise MesoError("the controller closed the event stream (shutting down?)")
        return self._follow_next_leader(view, on_event)

    def _follow_next_leader(self, view: dict, on_event: Callable[[dict], None]) -> dict | None:
        """The stream ended with several controllers named: the leader went; follow the next
        one's events once one leads (the outcome, if it came meanwhile, is in the job's view)."""
        import time

        deadline = time.monotonic() + FAILOVER_WAIT
        while True:
            try:
                stream = self._events(view["job"])
            except MesoError:
                if time.monotonic() > deadline:
                    raise MesoError(
                        f"no controller leads after {FAILOVER_WAIT:.0f} s: the job goes on; "
                        "`meso status` tells how it stands"
                    ) from None
                time.sleep(1)
                continue
            try:
                outcome = self.job(view["job"]).get("outcome")
                if outcome is not None and outcome["version"] >= view["version"]:
                    return outcome
                return self._follow(view, stream, on_event, False)
            finally:
                stream.close()


def _sse(response: http.client.HTTPResponse) -> Iterator[dict]:
    """Server-Sent Events' data objects, as they come."""
    data: list[str] = []
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                with contextlib.suppress(ValueError):  # not ours: skip it
                    yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _to_leader(addr: str, location: str | None, queue: list[str], reasons: list[str]) -> None:
    """A standby answered: try the leader it names next if it is one of ours."""
    if not location:
        reasons.append(f"{addr}: a standby, and no leader at the moment")
        return
    leader = urlsplit(location)
    reasons.append(f"{addr}: a standby (the leader is {leader.scheme}://{leader.netloc})")
    for i, other in enumerate(queue):
        if _where(other) == _where(f"{leader.scheme}://{leader.netloc}"):
            queue.insert(0, queue.pop(i))
            return


def _where(addr: str) -> tuple[str, int, bool]:
    """MESO_ADDR's host, port and whether it is https; UsageError if it is not an address."""
    parts = urlsplit(addr if "://" in addr else f"http://{addr}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise UsageError(f"MESO_ADDR: {addr!r} is not http://HOST:PORT or https://HOST:PORT")
    return parts.hostname, port, parts.scheme == "https"


def _raise_for(status: int, raw: bytes) -> None:
    """The controller's error answer as the CLI's one-line error."""
    body = _body_of(raw)
    message = str(body.get("error") or "error")
    if status == 401:
        message += " (check MESO_TOKEN / MESO_TOKEN_FILE)"
    if isinstance(body.get("unplaced"), list):
        raise Unplaceable(message, body["unplaced"])
    raise ApiError(status, message)


def _body_of(body: bytes) -> dict:
    """An error answer's JSON ({"error": ...}), or its text as the error."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    return {"error": body.decode("utf-8", "replace").strip()[:300] or "error"}
