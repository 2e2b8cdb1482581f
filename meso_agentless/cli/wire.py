"""One HTTP/1.1 request and its whole answer, over a socket: what the CLI's quick commands need.

The standard library's http.client imports the email package, which alone costs about 30 ms of
start-up here: a third of the 0.1 s a client command such as `meso hosts -o json` may take
in all. So a plain request/response (Connection: close, a JSON body) goes over this, and
http.client is imported only for streams (logs, events). It speaks to the controller's own
server (uvicorn): a status line, headers, and a body by Content-Length, chunked, or to EOF.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

MAX_ANSWER = 64 << 20  # bytes: a controller's answer is far smaller; a stranger's may not be


class WireError(OSError):
    """The answer was not HTTP/1.1 as expected (treated like a connection failure)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def exchange(
    host: str,
    port: int,
    tls: bool,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    connect_timeout: float,
    timeout: float | None,
) -> Answer:
    """Send one request and read the whole answer (the server closes the connection)."""
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        if tls:
            import ssl  # only for https: it costs start-up time

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        sock.settimeout(timeout)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                 f"Content-Length: {len(body or b'')}"]  # fmt: skip
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        chunks, size = [], 0
        while data := sock.recv(65536):
            chunks.append(data)
            size += len(data)
            if size > MAX_ANSWER:
                raise WireError(f"an answer of more than {MAX_ANSWER} bytes")
    finally:
        sock.close()
    return parse(b"".join(chunks))


def parse(raw: bytes) -> Answer:
    """A whole HTTP/1.1 answer (pure); WireError if it is not one."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise WireError("no complete answer")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WireError(f"not HTTP: {status_line[:80]!r}")
    headers = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise WireError(f"a header line without a colon: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _unchunk(rest)
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit() or int(length) > len(rest):
            raise WireError("the answer is shorter than it says")
        body = rest[: int(length)]
    else:
        body = rest
    return Answer(int(parts[1]), headers, body)


def _unchunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            raise WireError("a chunk without its size line")
        try:
            size = int(data[at:end].split(b";")[0], 16)
        except ValueError:
            raise WireError("a chunk size that is not a number") from None
        if size == 0:
            return b"".join(out)
        start = end + 2
        if start + size > len(data):
            raise WireError("a chunk shorter than it says")
        out.append(data[start : start + size])
        at = start + size + 2
