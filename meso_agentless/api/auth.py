"""The bearer token every route but /v1/health asks for (a dependency on the routers)."""

from __future__ import annotations

import hmac
import os
import re
import secrets
import sys
from pathlib import Path

from fastapi import HTTPException, Request

from meso_agentless.errors import UsageError

MIN_TOKEN_LENGTH = 16


COOKIE = "meso_token"  # the dashboard's session: the same token, HttpOnly, SameSite=Strict
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def require_token(request: Request) -> None:
    """401 unless `Authorization: Bearer <token>` carries the controller's token, or (without
    that header) the dashboard's cookie does; a change sent with the cookie must come from the
    controller's own pages (403 for another Origin: no cross-site request forgery)."""
    expected: str = request.app.state.ctx.token
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and token_matches(given, expected):
            return
    else:
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and token_matches(cookie, expected):
            if request.method not in SAFE_METHODS:
                require_same_origin(request)
            return
    raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer ...)",
                        headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def require_same_origin(request: Request) -> None:
    """403 unless the request's Origin is this controller's own (browsers send it with every
    POST, PATCH and DELETE)."""
    origin = request.headers.get("origin")
    if origin != own_origin(request):
        raise HTTPException(403, f"origin: {origin or 'none'} is not this controller's "
                                 f"({own_origin(request)}): request refused")  # fmt: skip


TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: it goes in a header


def ensure_token(path: Path) -> str:
    """The token in `path`, made (random, mode 0600) if the file does not exist yet.
    UsageError naming --token-file for a file that cannot be made or read, or holds no token."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_token_file(path)
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    except OSError as exc:
        raise UsageError(f"--token-file {path}: {exc.strerror or exc}") from None


def read_token_file(path: Path) -> str:
    """A token file's token; UsageError if it is not one. A file others may read is used, with
    a warning on stderr."""
    try:
        token = path.read_bytes().decode("ascii").strip()
        mode = path.stat().st_mode
    except UnicodeDecodeError:
        raise UsageError(f"token file {path}: not a token (printable ASCII)") from None
    except OSError as exc:
        raise UsageError(f"token file {path}: {exc.strerror or exc}") from None
    if len(token) < MIN_TOKEN_LENGTH or not TOKEN.fullmatch(token):
        raise UsageError(f"token file {path}: the token must be at least {MIN_TOKEN_LENGTH} "
                         "printable characters, no spaces")  # fmt: skip
    if mode & 0o077:
        print(f"meso: warning: token file {path} can be read by others (chmod 600 it)",
              file=sys.stderr)  # fmt: skip
    return token
