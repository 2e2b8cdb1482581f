"""A throwaway PostgreSQL server for tests: Debian's own binaries, initdb + pg_ctl in a temporary
directory, as an unprivileged user, listening on loopback only (a free port), with a password.

    with TempPostgres() as pg:
        url = pg.url  # postgresql://meso:PASSWORD@127.0.0.1:PORT/meso
        pg.fresh_url()  # a new, empty database on the same server

`stop()` (or leaving the block) ends the server and removes its files: nothing is left running.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from meso_agentless.errors import UsageError

USER = "meso"
RUN_AS = "postgres"  # the server never runs as root; Debian's package makes this user


def server_bin() -> Path:
    """The directory of the newest PostgreSQL server installed (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))  # fmt: skip
    if not found:
        raise UsageError("postgresql: no server installed (apt-get install postgresql; "
                         "scripts/setup does)")  # fmt: skip
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    def __init__(self) -> None:
        self.bin = server_bin()
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="meso-pg-"))
        self.data = self.dir / "data"
        self._databases = 0
        self._started = False

    @property
    def url(self) -> str:
        return self.url_of("meso")

    def url_of(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups"]
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120,
                              cwd=self.dir, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-2000:]}")

    def start(self) -> TempPostgres:
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam(RUN_AS).pw_uid, -1)
        pwfile.chmod(0o600)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                  f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                  "--no-instructions")  # fmt: skip
        pwfile.unlink()
        self.resume()
        self.create_database("meso")
        return self

    def resume(self) -> None:
        """Start the server (again, after halt(): the same data, port and password)."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.dir} -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off")  # fmt: skip
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        self._started = True

    def halt(self) -> None:
        """Stop the server, keeping its data (the database goes away, as in an outage)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._started = False

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg  # the postgresql extra

        with psycopg.connect(self.url_of("postgres"), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def fresh_url(self) -> str:
        """The URL of a new, empty database (one per test)."""
        self._databases += 1
        return self.create_database(f"t{self._databases}")

    def stop(self) -> None:
        if self._started:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")  # fmt: skip
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
