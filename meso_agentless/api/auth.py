"""The bearer token every route but /v1/health asks for (a dependency on the routers)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

from meso_agentless.errors import UsageError

MIN_TOKEN_LENGTH = 16


def require_token(request: Request) -> None:
    """401 unless `Authorization: Bearer <token>` carries the controller's token."""
    expected: str = request.app.state.ctx.token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             expected.encode()):  # fmt: skip
        raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def ensure_token(path: Path) -> str:
    """The token in `path`, made (random, mode 0600) if the file does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if len(token) < MIN_TOKEN_LENGTH:
            raise UsageError(f"token file {path}: the token must have at least "
                             f"{MIN_TOKEN_LENGTH} characters") from None  # fmt: skip
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
