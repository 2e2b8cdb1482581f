"""The dashboard's sign-in: the API's token, once, into an HttpOnly SameSite=Strict cookie."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from meso_agentless.api.auth import COOKIE, token_matches


def signed_in(request: Request) -> bool:
    """The cookie (or a bearer header, for curl) carries the controller's token."""
    expected: str = request.app.state.ctx.token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token_matches(given, expected):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and token_matches(cookie, expected)


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")  # fmt: skip


def end_session(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")  # fmt: skip


def dashboard_line(url: str, token: str, token_file: object, terminal: bool) -> str:
    """What `meso controller` prints about the dashboard: the link with the token when it goes
    to a person's terminal (one click signs in), never into a log file or the journal."""
    if terminal:
        return f"meso controller: dashboard at {url}/ui?token={token}"
    return f"meso controller: dashboard at {url}/ui (sign in with the token in {token_file})"
