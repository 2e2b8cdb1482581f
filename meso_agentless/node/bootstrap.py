"""Run the node command streamed on stdin: `python3 -c BOOTSTRAP VERB...` (stdlib only).

Reads the source, length-prefixed, from stdin and runs it; the rest of stdin is then the
command's own input. Compiling the source costs the cold start tens of milliseconds, so the
compiled code is kept in CACHE, a root-only directory on /run (gone with a reboot), one file
per source and Python: named by the hash of the source as received (so a changed source is
never run from a stale file) and used only if the directory and the file are this user's own
and nobody else's to write, and its contents hash to what the file says (a truncated or
corrupted file is compiled anew). Anything amiss and the source is compiled as before.
"""

import contextlib
import hashlib
import marshal
import os
import stat
import sys

CACHE = "/run/meso-node/code"


def _own(st: os.stat_result, kind: int) -> bool:
    """This user's, of `kind`, and nobody else's to read or write."""
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def key(source: bytes) -> str:
    """The cache entry's name: the source's hash, and the Python that compiled it."""
    return f"{hashlib.sha256(source).hexdigest()}-{sys.implementation.cache_tag}-{sys.hexversion:x}"


def entry(name: str, code) -> bytes:
    """A cache entry's contents: a hash binding it to its name, then the marshalled code."""
    body = marshal.dumps(code)
    return hashlib.sha256(name.encode() + body).digest() + body


def load(source: bytes, cache: str = CACHE):
    """The node command's code: from the cache when it holds this source's, else compiled."""
    name = key(source)
    path = os.path.join(cache, name)
    try:
        if _own(os.lstat(cache), stat.S_IFDIR):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                data = f.read() if _own(os.fstat(fd), stat.S_IFREG) else b""
            if data and hashlib.sha256(name.encode() + data[32:]).digest() == data[:32]:
                return marshal.loads(data[32:])  # noqa: S302 - our own, checked above
    except (OSError, ValueError, EOFError, TypeError):
        pass
    code = compile(source, "nodecmd", "exec")
    with contextlib.suppress(OSError):  # no cache (not root, /run read-only): as before
        _keep(code, cache, name)
    return code


def _keep(code, cache: str, name: str) -> None:
    """Write the compiled code as the cache's one entry (others are older sources')."""
    for directory in (os.path.dirname(cache), cache):  # as the node command makes its own
        os.makedirs(directory, mode=0o700, exist_ok=True)
    if not _own(os.lstat(cache), stat.S_IFDIR):
        return
    tmp = os.path.join(cache, f".{name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(entry(name, code))
    os.replace(tmp, os.path.join(cache, name))
    for other in os.listdir(cache):
        if other != name and not other.startswith("."):
            os.unlink(os.path.join(cache, other))


if __name__ == "__main__":
    n = int(sys.stdin.buffer.readline())
    s = sys.stdin.buffer.read(n)
    sys.argv = ["nodecmd", *sys.argv[1:]]
    # the source goes along: a cron timer runs a copy of it (nodecmd.own_program)
    exec(load(s), {"__name__": "__main__", "__nodecmd_source__": s})  # noqa: S102
