# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A client of the meso-agentless controller's HTTP API, on Ansible's own URL helpers (nothing
to install where a module runs). Shared by the modules and the inventory plugin."""

import json
import os
import time

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote
from ansible.module_utils.urls import open_url

# the options every module shares (doc fragment meso.agentless.controller)
CONTROLLER_ARGS = dict(
    controller=dict(type="str", required=True, fallback=(env_fallback, ["MESO_ADDR"])),
    token=dict(type="str", no_log=True),
    token_file=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    request_timeout=dict(type="float", default=30),
)
LIVE_STATES = ("staging", "running")  # a unit that holds what it was given


class MesoApiError(Exception):
    """What the controller refused (`status` its HTTP status) or why it could not be asked
    (`status` None); the message names the field the controller named."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


def resolve_token(token, token_file):
    """The bearer token: `token`, else the file `token_file`, else $MESO_TOKEN, else the file
    $MESO_TOKEN_FILE. MesoApiError (naming the option) when there is none."""
    if token:
        return token.strip()
    path = token_file or (
        None if os.environ.get("MESO_TOKEN") else os.environ.get("MESO_TOKEN_FILE")
    )
    if path:
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError as exc:
            raise MesoApiError(f"token_file: cannot read {path}: {exc.strerror or exc}") from None
        if not text:
            raise MesoApiError(f"token_file: {path} is empty")
        return text
    if os.environ.get("MESO_TOKEN"):
        return os.environ["MESO_TOKEN"].strip()
    raise MesoApiError(
        "token: no API token: set token or token_file (or MESO_TOKEN or MESO_TOKEN_FILE)"
    )


class MesoClient:
    """JSON over HTTP(S) with the controller's bearer token."""

    def __init__(self, url, token, validate_certs=True, ca_path=None, timeout=30):
        if not url:
            raise MesoApiError("controller: no controller URL: set controller (or MESO_ADDR)")
        if not url.startswith(("http://", "https://")):
            raise MesoApiError(f"controller: {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.token = token
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout

    @classmethod
    def from_params(cls, params):
        """From the options of CONTROLLER_ARGS."""
        token = resolve_token(params.get("token"), params.get("token_file"))
        return cls(
            params.get("controller") or os.environ.get("MESO_ADDR"),
            token,
            params.get("validate_certs", True),
            params.get("ca_path"),
            params.get("request_timeout") or 30,
        )

    def request(self, method, path, body=None, content_type="application/json"):
        """(status, decoded JSON). `body`: data sent as JSON, or text sent as `content_type`."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode("utf-8")
                headers["Content-Type"] = "application/json"
            else:
                data = body.encode("utf-8") if not isinstance(body, bytes) else body
                headers["Content-Type"] = content_type
        kwargs = dict(
            method=method,
            data=data,
            headers=headers,
            validate_certs=self.validate_certs,
            timeout=self.timeout,
            follow_redirects="none",
        )
        if self.ca_path:
            kwargs["ca_path"] = self.ca_path
        try:
            response = open_url(self.url + path, **kwargs)
            status, text = response.getcode(), response.read()
        except HTTPError as exc:
            status, text = exc.code, exc.read() if exc.fp is not None else b""
            payload = _decode(text)
            message = payload.get("error") if isinstance(payload, dict) else None
            raise MesoApiError(
                message or f"HTTP {exc.code} {exc.reason}",
                exc.code,
                payload if isinstance(payload, dict) else None,
            ) from None
        except (TimeoutError, OSError, URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MesoApiError(f"controller: cannot reach {self.url}: {reason}") from None
        return status, _decode(text)

    # -- the routes the modules use --------------------------------------------------------

    def hosts(self):
        return self.request("GET", "/v1/hosts")[1]["hosts"]

    def host(self, name):
        return self.request("GET", "/v1/hosts/{}".format(quote(name, safe="")))[1]

    def jobs(self):
        return self.request("GET", "/v1/jobs")[1]["jobs"]

    def job(self, name):
        """One job's view, or None if the controller has no job of that name."""
        try:
            return self.request("GET", "/v1/jobs/{}".format(quote(name, safe="")))[1]
        except MesoApiError as exc:
            if exc.status == 404:
                return None
            raise

    def plan_job(self, definition):
        """POST /v1/plan/job: what submitting `definition` (data or YAML text) would do."""
        return self.request("POST", "/v1/plan/job", definition, "application/yaml")[1]

    def submit(self, definition):
        """(created, job view): 201 created (or a new run), 200 the same job already."""
        status, view = self.request("POST", "/v1/jobs", definition, "application/yaml")
        return status == 201, view

    def scale(self, name, task, count):
        path = "/v1/jobs/{}/scale".format(quote(name, safe=""))
        return self.request("POST", path, {"task": task, "count": count})[1]

    def kill(self, name):
        return self.request("DELETE", "/v1/jobs/{}".format(quote(name, safe="")))[1]

    def wait_outcome(
        self, name, version, timeout, every=1.0, clock=time.monotonic, sleep=time.sleep
    ):
        """The job's view once the controller has worked out its outcome for `version` (or a
        later one): placed and healthy, finished, failed or unplaceable. MesoApiError after
        `timeout` seconds."""
        deadline = clock() + timeout
        while True:
            view = self.job(name)
            if view is None:
                raise MesoApiError(f"job {name!r} is gone from the controller")
            outcome = view.get("outcome")
            if outcome is not None and outcome.get("version", 0) >= version:
                return view
            if clock() >= deadline:
                raise MesoApiError(
                    "wait_timeout: job {!r} has no outcome after {}s (tasks by state: {})".format(
                        name, timeout, view.get("counts")
                    )
                )
            sleep(every)

    def wait_stopped(self, name, timeout, every=1.0, clock=time.monotonic, sleep=time.sleep):
        """The job's view once none of its tasks holds a unit (staging or running)."""
        deadline = clock() + timeout
        while True:
            view = self.job(name)
            if view is None or not any(t["state"] in LIVE_STATES for t in view.get("tasks", [])):
                return view
            if clock() >= deadline:
                raise MesoApiError(
                    f"wait_timeout: job {name!r} still has tasks running after {timeout}s"
                )
            sleep(every)


def _decode(text):
    if not text:
        return {}
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except ValueError:
        return {"error": "the controller answered something that is not JSON"}
