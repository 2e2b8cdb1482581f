"""What many SSH connections cost the controller: paramiko keeps a thread per transport.

A simulated sshd (paramiko's ServerInterface, in a process of its own on 127.0.0.1, echoing JSON
lines on an exec channel like the node command's `serve`) takes --connections connections from
this process, each made as the controller makes them (hosts.ssh.connect: known_hosts,
RejectPolicy, public key) with one long-lived channel on it. Printed: the handshakes' rate, this
process's threads and memory (RSS and Python heap) per connection, and one round of a JSON line
to every connection and back (sent to all before reading any).

Run: .venv/bin/python bench/connections_bench.py [--connections 1000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from meso_agentless.hosts import ssh

PARALLEL = 16  # handshakes at once, as the transport's MAX_HANDSHAKES


class EchoServer(paramiko.ServerInterface):
    """Lets in one public key; an exec channel echoes every line it gets."""

    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed = allowed

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL if key == self.allowed else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return True


def serve(directory: Path, count: int) -> None:
    """The simulated sshd: take `count` connections, echo lines until they close."""
    host_key = paramiko.ECDSAKey(filename=str(directory / "host_key"))
    allowed = paramiko.ECDSAKey(filename=str(directory / "client_key"))
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    (directory / "port").write_text(str(listener.getsockname()[1]))

    def one(conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(host_key)
        transport.start_server(server=EchoServer(allowed))
        channel = transport.accept(60)
        if channel is None:
            return
        reader = channel.makefile("rb")
        for line in reader:
            channel.sendall(line)

    for _ in range(count):
        conn, _ = listener.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()
    threading.Event().wait()  # until killed


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def threads() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


def measure(count: int, out) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        host_key, client_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
        host_key.write_private_key_file(str(directory / "host_key"))
        client_key.write_private_key_file(str(directory / "client_key"))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", tmp, str(count + 1)]
        )  # and a warm-up
        try:
            port_file = directory / "port"
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            port = int(port_file.read_text())
            known = directory / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
            run(count, port, known, directory / "client_key", out)
        finally:
            server.kill()
            server.wait()


def run(count: int, port: int, known: Path, key: Path, out) -> None:
    def connect(_: int) -> tuple[paramiko.SSHClient, paramiko.Channel]:
        client = ssh.connect("127.0.0.1", user="meso", key_file=key, known_hosts=known, port=port)
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=30)
        channel.exec_command("serve")
        return client, channel

    connect(0)[0].close()  # warm: imports, the first key exchange
    gc.collect()
    threads_before, rss_before = threads(), rss()
    tracemalloc.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        connections = list(pool.map(connect, range(count)))
    made = time.perf_counter() - started
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    added_threads, added_rss = threads() - threads_before, rss() - rss_before
    out(f"connect {count} connections: {count / made:6.1f} handshakes/s ({PARALLEL} at once), "
        f"{made:6.1f} s")  # fmt: skip
    out(f"threads {count} connections: +{added_threads} threads "
        f"({added_threads / count:.2f} per connection)")  # fmt: skip
    out(f"memory  {count} connections: {added_rss / count / 1024:6.1f} KB RSS, "
        f"{heap / count / 1024:6.1f} KB Python heap per connection")  # fmt: skip
    line = json.dumps({"verb": "sample"}).encode() + b"\n"
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for _, channel in connections:
            channel.sendall(line)
        for _, channel in connections:
            got = b""
            while not got.endswith(b"\n"):
                got += channel.recv(4096)
        rounds.append(time.perf_counter() - started)
    best = min(rounds)
    out(f"round   {count} connections: a JSON line to each and back in {best * 1000:7.1f} ms "
        f"({best / count * 1e6:5.0f} us per connection)")  # fmt: skip
    for client, _ in connections:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 connections")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    measure(20 if args.quick else args.connections, lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
