"""The controller's state in SQLite (WAL, schema versioned with PRAGMA user_version).

Jobs, and one row per task attempt: the intent (host, unit) is written before the launch and
the outcome after, so a controller that dies mid-way loses nothing: the next one reconciles the
rows with the hosts' own units. Kept behind this small class so that another database (shared by
several controllers) can take its place.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from meso_agentless.errors import UsageError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    framework TEXT NOT NULL,
    type TEXT NOT NULL,
    spec TEXT NOT NULL,            -- the job file, validated, as JSON
    inventory TEXT NOT NULL,
    state TEXT NOT NULL,           -- active, killed, done
    submitted REAL NOT NULL,
    run INTEGER NOT NULL DEFAULT 1 -- a job that ended and is run again starts a new run
);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL REFERENCES jobs(name),
    run INTEGER NOT NULL,
    task TEXT NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    host TEXT NOT NULL,
    unit TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,           -- staging, running, finished, failed, killed, gone, lost...
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    resources TEXT NOT NULL,
    ports TEXT NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    since REAL NOT NULL,           -- when it entered its current state
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (job, task, idx, attempt)
);
CREATE INDEX tasks_by_job ON tasks (job, task, idx);
CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    boot TEXT NOT NULL,
    seen REAL NOT NULL
);
"""


@dataclass(frozen=True)
class TaskRow:
    id: int
    job: str
    task: str
    index: int
    attempt: int
    host: str
    unit: str
    state: str
    exit_code: int | None
    signal: int | None
    reason: str | None
    resources: dict
    ports: list[int]
    restarts: int
    since: float


@dataclass(frozen=True)
class JobRow:
    name: str
    framework: str
    type: str
    spec: dict
    inventory: str
    state: str


def default_path() -> Path:
    """--state, then $MESO_STATE, then the platform's state directory."""
    env = os.environ.get("MESO_STATE")
    if env:
        return Path(env)
    return Path(platformdirs.user_state_dir("meso-agentless")) / "state.db"


class Store:
    """One SQLite database; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise UsageError(f"state {path}: {exc}") from None
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"state {self.path} is schema {version}, newer than this meso ({SCHEMA_VERSION})"
            )
        if version == 0:  # one script, one transaction: a half-made schema is never left
            self.db.executescript(
                f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;"
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- jobs ----------------------------------------------------------------------------------

    def put_job(self, name: str, framework: str, type_: str, spec: dict, inventory: str) -> None:
        """Submit a job, or update its spec (a new submission of the same job)."""
        self.db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, 'active', ?, 1) ON CONFLICT(name) DO UPDATE "
            "SET framework=excluded.framework, type=excluded.type, spec=excluded.spec, "
            "inventory=excluded.inventory, state='active', "
            "run = CASE WHEN jobs.state = 'active' THEN jobs.run ELSE jobs.run + 1 END",
            (name, framework, type_, json.dumps(spec), inventory, time.time()),
        )

    def job(self, name: str) -> JobRow | None:
        row = self.db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else _job(row)

    def jobs(self) -> list[JobRow]:
        return [_job(r) for r in self.db.execute("SELECT * FROM jobs ORDER BY submitted, name")]

    def set_job_state(self, name: str, state: str) -> None:
        self.db.execute("UPDATE jobs SET state = ? WHERE name = ?", (state, name))

    def set_job_spec(self, name: str, spec: dict) -> None:
        self.db.execute("UPDATE jobs SET spec = ? WHERE name = ?", (json.dumps(spec), name))

    # -- tasks ---------------------------------------------------------------------------------

    def add_intent(
        self, job: str, task: str, index: int, attempt: int, host: str, unit: str,
        resources: dict, ports: list[int],
    ) -> None:  # fmt: skip
        """Written before the launch: from here on the attempt is accounted for."""
        now = time.time()
        self.db.execute(
            "INSERT INTO tasks (job, run, task, idx, attempt, host, unit, state, resources, ports, "
            "since, created, updated) SELECT ?, run, ?, ?, ?, ?, ?, 'staging', ?, ?, ?, ?, ? "
            "FROM jobs WHERE name = ?",
            (job, task, index, attempt, host, unit, json.dumps(resources), json.dumps(ports),
             now, now, now, job),
        )  # fmt: skip

    def update_task(self, unit: str, status: dict) -> None:
        """Record what the host said of a unit (state, exit code, signal, reason, restarts)."""
        self.db.execute(
            "UPDATE tasks SET since = CASE WHEN state = ?1 THEN since ELSE ?6 END, "
            "state = ?1, exit_code = COALESCE(?2, exit_code), "
            "signal = COALESCE(?3, signal), reason = COALESCE(?4, reason), "
            "restarts = MAX(restarts, ?5), updated = ?6 WHERE unit = ?7",
            (status["state"], status.get("exit_code"), status.get("signal"), status.get("reason"),
             status.get("restarts") or 0, time.time(), unit),
        )  # fmt: skip

    def tasks(self, job: str | None = None) -> list[TaskRow]:
        """Attempts of the current run of `job` (or of every job)."""
        query = (
            "SELECT tasks.* FROM tasks JOIN jobs ON tasks.job = jobs.name AND tasks.run = jobs.run"
        )
        if job is None:
            rows = self.db.execute(f"{query} ORDER BY job, task, idx, attempt")
        else:
            rows = self.db.execute(f"{query} WHERE job = ? ORDER BY task, idx, attempt", (job,))
        return [_task(r) for r in rows]

    def last_attempts(self, job: str) -> dict[tuple[str, int], int]:
        """The highest attempt of each instance over every run: a new run numbers on from it."""
        rows = self.db.execute(
            "SELECT task, idx, MAX(attempt) FROM tasks WHERE job = ? GROUP BY task, idx", (job,)
        )
        return {(task, idx): attempt for task, idx, attempt in rows}

    def host_boots(self) -> dict[str, str]:
        return {r["name"]: r["boot"] for r in self.db.execute("SELECT name, boot FROM hosts")}

    def set_host_boot(self, name: str, boot: str) -> None:
        self.db.execute(
            "INSERT INTO hosts VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "boot=excluded.boot, seen=excluded.seen",
            (name, boot, time.time()),
        )


def _job(row: sqlite3.Row) -> JobRow:
    return JobRow(row["name"], row["framework"], row["type"], json.loads(row["spec"]),
                  row["inventory"], row["state"])  # fmt: skip


def _task(row: sqlite3.Row) -> TaskRow:
    return TaskRow(
        row["id"], row["job"], row["task"], row["idx"], row["attempt"], row["host"], row["unit"],
        row["state"], row["exit_code"], row["signal"], row["reason"],
        json.loads(row["resources"]), json.loads(row["ports"]), row["restarts"], row["since"],
    )  # fmt: skip
