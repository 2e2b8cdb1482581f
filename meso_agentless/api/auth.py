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


def require_token(request: Request) -> None:
    """401 unless `Authorization: Bearer <token>` carries the controller's token."""
    expected: str = request.app.state.ctx.token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             expected.encode()):  # fmt: skip
        raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


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
