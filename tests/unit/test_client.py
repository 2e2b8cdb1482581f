"""The CLI as a client: addresses tried in order, what is not a meso controller skipped, and
settings that are wrong told in one line."""

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from meso_agentless.cli.client import Remote
from meso_agentless.errors import MesoError, UsageError
from meso_agentless.settings import load


class _Html(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not here</html>")

    def log_message(self, *args):
        pass


class _Meso(_Html):
    def do_GET(self):
        body = b'{"hosts": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def servers():
    started = []
    for handler in (_Html, _Meso):
        server = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in started]
    for server in started:
        server.shutdown()


def test_addresses_are_tried_in_order_past_dead_ones_and_other_http_servers(servers):
    html, meso = servers
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    assert Remote((dead, html, meso), "t" * 20).hosts() == {"hosts": []}
    with pytest.raises(MesoError, match="not a meso controller"):
        Remote((html,), "t" * 20).hosts()


@pytest.mark.parametrize("addr", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "ftp://x:1",
                                  "http://:80"])  # fmt: skip
def test_a_bad_address_is_one_line(addr):
    with pytest.raises(UsageError, match="MESO_ADDR"):
        Remote((addr,), "t" * 20).hosts()


def test_a_token_that_cannot_go_in_a_header_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="MESO_TOKEN: not a token"):
        load({"MESO_TOKEN": "abc\r\nX-Evil: 1", "MESO_CONFIG": str(tmp_path / "none")}).read_token()
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfe binary")
    with pytest.raises(UsageError, match="not a token"):
        load({"MESO_TOKEN_FILE": str(token_file),
              "MESO_CONFIG": str(tmp_path / "none")}).read_token()  # fmt: skip


def test_token_files_that_cannot_be_made_or_read_are_one_line(tmp_path):
    from meso_agentless.api.auth import ensure_token

    made = ensure_token(tmp_path / "new" / "token")
    assert len(made) >= 32 and oct((tmp_path / "new" / "token").stat().st_mode & 0o777) == "0o600"
    assert ensure_token(tmp_path / "new" / "token") == made
    (tmp_path / "file").write_text("x")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff" * 40)
    short = tmp_path / "short"
    short.write_text("abc")
    for path, says in ((tmp_path, "Is a directory"), (tmp_path / "file" / "sub", "File exists"),
                       (binary, "not a token"), (short, "at least 16")):  # fmt: skip
        with pytest.raises(UsageError, match=says):
            ensure_token(path)
