"""A forward HTTP proxy for the lab's hosts that reaches the Debian mirror and nothing else.

Lab hosts have no route out; their apt goes through this proxy, which listens on the lab
bridge's address and forwards GET and HEAD requests for allow-listed mirror hosts only.
Run by `meso lab up`: python -m meso_agentless.lab.aptproxy ADDRESS PORT LAB_ROOT MIRROR_HOST...
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FORWARDED_HEADERS = ("Range", "If-Modified-Since", "If-None-Match", "If-Range", "Accept")
PORT = 3142


def make_handler(allowed: frozenset[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._forward()

        def do_HEAD(self) -> None:
            self._forward()

        def _forward(self) -> None:
            url = urlsplit(self.path)
            if url.scheme != "http" or url.hostname not in allowed:
                self.send_error(403, f"only {sorted(allowed)} are reachable from the lab")
                return
            headers = {h: self.headers[h] for h in FORWARDED_HEADERS if self.headers[h]}
            # the scheme was checked above: http to an allowed mirror only
            request = urllib.request.Request(self.path, headers=headers, method=self.command)  # noqa: S310
            try:
                upstream = urllib.request.urlopen(request, timeout=60)  # noqa: S310
            except urllib.error.HTTPError as exc:
                upstream = exc
            except OSError as exc:
                self.send_error(502, f"mirror unreachable: {exc}")
                return
            with upstream:
                self.send_response(upstream.status)
                for name, value in upstream.headers.items():
                    if name.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(name, value)
                self.end_headers()
                if self.command == "GET":
                    shutil.copyfileobj(upstream, self.wfile)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main(argv: list[str]) -> None:
    address, port, _lab_root, *hosts = argv
    server = ThreadingHTTPServer((address, int(port)), make_handler(frozenset(hosts)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
