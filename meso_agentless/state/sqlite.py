"""The cluster's state in SQLite (WAL, schema versioned with PRAGMA user_version).

Jobs, frameworks' run-time settings, hosts' boot identities, and one row per task attempt: the
intent (host, unit) is written before the launch and the outcome after, so a controller that
dies mid-way loses nothing: the next one reconciles the rows with the hosts' own units.

Every change of a task or a job is a compare-and-set on the row's version: a writer that read
an older row changes nothing. Each thread gets its own connection, so the controller's loop
writes while the API's threads read consistent snapshots.

The statements are portable SQL (no SQLite-only functions, `?` placeholders only):
state.postgres.PgStore runs the very same ones on PostgreSQL.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from sys import intern

from meso_agentless.core.pinning import Pins
from meso_agentless.core.tasks import TaskState, TaskStatus
from meso_agentless.errors import UsageError
from meso_agentless.state.deployments import DeploymentTables
from meso_agentless.state.store import Intent, JobRow, RunRow, SchedulerRow, TaskRow

SCHEMA_VERSION = 7
SCHEMA = """
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    framework TEXT NOT NULL,
    type TEXT NOT NULL,
    spec TEXT NOT NULL,            -- the job file, validated, as JSON
    inventory TEXT NOT NULL,
    state TEXT NOT NULL,           -- active, done, failed, killed
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
    state TEXT NOT NULL,           -- core.tasks.TaskState
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
PINS_COLUMN = "ALTER TABLE tasks ADD COLUMN pins TEXT;  -- JSON; NULL: nothing pinned\n"
# version 1 -> 2: row versions (compare-and-set), submission order, frameworks' settings
MIGRATIONS = {
    2: """
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET seq = rowid;
CREATE TABLE frameworks (
    name TEXT PRIMARY KEY,
    weight REAL,                   -- NULL: the inventory's
    quota TEXT,                    -- JSON; NULL: the inventory's
    version INTEGER NOT NULL DEFAULT 1
);
""",
    # 2 -> 3: what the task's health checks say; hosts being drained; this state's identity
    3: """
ALTER TABLE tasks ADD COLUMN health TEXT;  -- starting, healthy, unhealthy; NULL: no checks
ALTER TABLE hosts ADD COLUMN drain REAL;   -- when a drain must be over (wall time); NULL: none
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('identity', lower(hex(randomblob(6))));
""",
    # 3 -> 4: the runs of cron jobs' timers, collected from the hosts
    4: """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL REFERENCES jobs(name),
    run INTEGER NOT NULL,
    task TEXT NOT NULL,
    idx INTEGER NOT NULL,
    timer TEXT NOT NULL,           -- the timer's unit
    host TEXT NOT NULL,
    unit TEXT NOT NULL UNIQUE,     -- the run's unit: one per scheduled time and host
    seq INTEGER NOT NULL,          -- the host's record number
    kind TEXT NOT NULL,            -- schedule, trigger
    scheduled REAL,
    fired REAL NOT NULL,
    state TEXT NOT NULL,           -- running, finished, failed, killed, skipped, lost
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    ended REAL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX runs_by_job ON runs (job, fired);
CREATE INDEX runs_by_timer ON runs (timer, seq);
""",
    # 4 -> 5: frameworks that schedule their own tasks through the API (they own their jobs)
    5: """
CREATE TABLE schedulers (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,              -- given at its first subscription
    failover REAL NOT NULL,        -- seconds its tasks outlive its stream
    registered REAL NOT NULL
);
""",
    # 5 -> 6: the dedicated cores, NUMA node and devices a task was given (core.pinning)
    6: PINS_COLUMN,
    # 6 -> 7: every version of a job's spec, the version each attempt runs, when it became
    # healthy, and deployments (a service changing from one version to another)
    7: """
ALTER TABLE jobs ADD COLUMN spec_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN job_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN healthy_since REAL;
CREATE TABLE job_versions (
    job TEXT NOT NULL REFERENCES jobs(name),
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    submitted REAL NOT NULL,
    submitter TEXT,                -- the token's name, if it has one
    PRIMARY KEY (job, version)
);
INSERT INTO job_versions (job, version, spec, submitted) SELECT name, 1, spec, submitted FROM jobs;
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL REFERENCES jobs(name),
    from_version INTEGER NOT NULL,
    to_version INTEGER NOT NULL,
    state TEXT NOT NULL,           -- running, waiting, successful, failed, cancelled
    promoted INTEGER NOT NULL DEFAULT 0,
    revert INTEGER NOT NULL DEFAULT 0, -- it goes back to an earlier version
    reason TEXT,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX deployments_by_job ON deployments (job, id);
""",
}


TASK_COLUMNS = ", ".join(
    f"tasks.{c}"
    for c in ("id", "job", "run", "task", "idx", "attempt", "host", "unit", "state", "exit_code",
              "signal", "reason", "resources", "ports", "restarts", "since", "version", "health",
              "created", "pins", "job_version", "healthy_since")
)  # fmt: skip


CONNECTIONS = itertools.count()  # each connection's serial number (outside_writes)


class Conflict(Exception):
    """A compare-and-set found a newer row: nothing was written."""


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of `script`, one by one (executescript would commit the lock)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()


def _use_wal(db: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put the database in WAL mode (kept in the file: once made, later connections find it).
    Changing the mode needs the file to itself and SQLite does not wait for that as it waits
    for locks: processes opening a new state at once try again, within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Store(DeploymentTables):
    """One SQLite database, a connection per thread."""

    changes = 0  # counts this object's writes of tasks and jobs: a read is stale once it moves

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        """`clock`: the wall clock times are stored by (the controller's)."""
        self.path = path
        self.clock = clock
        self._local = threading.local()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate(self.db)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"state {path}: {exc}") from None

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            _use_wal(db)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db, self._local.serial = db, next(CONNECTIONS)
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        # the version is read under the write lock: two processes opening a new file at once
        # must not both see 0 and both make the tables; one transaction per step, so a
        # half-made schema is never left
        while True:
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise UsageError(f"state {self.path} is schema {version}, newer than this "
                                     f"meso ({SCHEMA_VERSION})")  # fmt: skip
                if version == SCHEMA_VERSION:
                    db.execute("COMMIT")
                    return
                target = version + 1
                for statement in _statements(SCHEMA if version == 0 else MIGRATIONS[target]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside are one transaction (nested calls join the outer one)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    @property
    def identity(self) -> str:
        """This state's own random name: the units its controllers launch carry it, so a unit
        of the same name launched by anyone else is never taken for one of ours."""
        return self.db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()[0]

    def outside_writes(self) -> tuple[int, int] | None:
        """A mark that moves whenever another connection (another thread's, another process's)
        has committed a change since this thread's last look; None: cannot tell."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        return (self._local.serial, version)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- jobs ----------------------------------------------------------------------------------

    def put_job(
        self,
        name: str,
        framework: str,
        type_: str,
        spec: dict,
        inventory: str,
        submitter: str | None = None,
    ) -> JobRow:
        """Submit a job: new, the same active one again, or a new run of one that ended (a
        new spec is stored as the job's next version)."""
        self.changes += 1
        with self.transaction():
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self.db.execute(
                "INSERT INTO jobs (name, framework, type, spec, inventory, state, submitted, run, "
                "version, seq) VALUES (?, ?, ?, ?, ?, 'active', ?, 1, 1, ?) "
                "ON CONFLICT(name) DO UPDATE SET framework=excluded.framework, "
                "type=excluded.type, spec=excluded.spec, inventory=excluded.inventory, "
                "state='active', version = jobs.version + 1, "
                "submitted = CASE WHEN jobs.state = 'active' THEN jobs.submitted "
                "ELSE excluded.submitted END, "
                "seq = CASE WHEN jobs.state = 'active' THEN jobs.seq ELSE excluded.seq END, "
                "run = CASE WHEN jobs.state = 'active' THEN jobs.run ELSE jobs.run + 1 END",
                (name, framework, type_, json.dumps(spec), inventory, self.clock(), seq),
            )
            self.record_version(name, spec, submitter)
            job = self.job(name)
        assert job is not None  # noqa: S101 - just written, in this transaction
        return job

    def job(self, name: str) -> JobRow | None:
        row = self.db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else _job(row)

    def jobs(self) -> list[JobRow]:
        return [_job(r) for r in self.db.execute("SELECT * FROM jobs ORDER BY seq, name")]

    def update_job(
        self,
        job: JobRow,
        *,
        state: str | None = None,
        spec: dict | None = None,
        submitter: str | None = None,
    ) -> JobRow:
        """Change a job's state or spec (stored as its next version) if it is still at
        `job.version`; else Conflict."""
        self.changes += 1
        with self.transaction():
            done = self.db.execute(
                "UPDATE jobs SET state = COALESCE(?, state), spec = COALESCE(?, spec), "
                "version = version + 1 WHERE name = ? AND version = ?",
                (state, None if spec is None else json.dumps(spec), job.name, job.version),
            )
            if done.rowcount != 1:
                raise Conflict(f"job {job.name} changed meanwhile")
            if spec is not None:
                self.record_version(job.name, spec, submitter)
        return self.job(job.name)  # type: ignore[return-value]

    # -- tasks ---------------------------------------------------------------------------------

    def add_intents(self, intents: Iterable[Intent]) -> None:
        """Written before the launches: from here on each attempt is accounted for."""
        self.changes += 1
        now = self.clock()
        with self.transaction():
            for i in intents:
                self.db.execute(
                    "INSERT INTO tasks (job, run, task, idx, attempt, host, unit, state, "
                    "resources, ports, since, created, updated, version, pins, job_version) "
                    "SELECT ?, run, ?, ?, ?, ?, ?, 'staging', ?, ?, ?, ?, ?, 1, ?, ? "
                    "FROM jobs WHERE name = ?",
                    (i.job, i.task, i.index, i.attempt, i.host, i.unit,
                     json.dumps(dict(i.resources)), json.dumps(list(i.ports)), now, now, now,
                     None if i.pins is None else json.dumps(i.pins.to_json()),
                     i.job_version, i.job),
                )  # fmt: skip

    def update_task(self, row: TaskRow, status: TaskStatus) -> TaskRow | None:
        """Record `status` if the row is still at `row.version`: the new row, or None (a newer
        state was written meanwhile, and is kept)."""
        self.changes += 1
        now = self.clock()
        done = self.db.execute(
            "UPDATE tasks SET since = CASE WHEN state = ? THEN since ELSE ? END, "
            "state = ?, exit_code = COALESCE(?, exit_code), "
            "signal = COALESCE(?, signal), reason = COALESCE(?, reason), "
            "restarts = CASE WHEN restarts > ? THEN restarts ELSE ? END, updated = ?, "
            "version = version + 1 WHERE id = ? AND version = ?",
            (status.state.value, now, status.state.value, status.exit_code, status.signal,
             status.reason, status.restarts, status.restarts, now, row.id, row.version),
        )  # fmt: skip
        if done.rowcount != 1:
            return None
        return _updated(row, status, now)  # what the statement wrote: no read back

    def drop_intent(self, row: TaskRow) -> bool:
        """Remove an intent its host refused (nothing was started): the instance is pending
        again. Only a staging row still at `row.version`."""
        self.changes += 1
        done = self.db.execute(
            "DELETE FROM tasks WHERE id = ? AND version = ? AND state = 'staging'",
            (row.id, row.version),
        )
        return done.rowcount == 1

    def set_health(self, row: TaskRow, health: str | None) -> TaskRow | None:
        """Record what the task's health checks say (compare-and-set, like every change)."""
        self.changes += 1
        done = self.db.execute(
            "UPDATE tasks SET health = ?, updated = ?, version = version + 1, "
            "healthy_since = CASE WHEN ? = 'healthy' THEN COALESCE(healthy_since, ?) END "
            "WHERE id = ? AND version = ?",
            (health, self.clock(), health, self.clock(), row.id, row.version),
        )
        if done.rowcount != 1:
            return None
        found = self.db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (row.id,))  # noqa: S608 - column names
        return _task(found.fetchone())

    def tasks(self, job: str | None = None) -> list[TaskRow]:
        """Attempts of the current run of `job` (or of every job)."""
        query = (
            f"SELECT {TASK_COLUMNS} FROM tasks "  # noqa: S608 - column names
            "JOIN jobs ON tasks.job = jobs.name AND tasks.run = jobs.run"
        )
        if job is None:
            rows = self.db.execute(f"{query} ORDER BY job, task, idx, attempt")
        else:
            rows = self.db.execute(f"{query} WHERE job = ? ORDER BY task, idx, attempt", (job,))
        return [_task(r) for r in rows]

    def tasks_in(self, states: Iterable[str]) -> list[TaskRow]:
        """Attempts of any run in these states (a unit of an earlier run may still be out there)."""
        wanted = sorted(states)
        marks = ",".join("?" * len(wanted))
        rows = self.db.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ({marks}) "  # noqa: S608 - only placeholders
            "ORDER BY job, task, idx, attempt",
            wanted,
        )
        return [_task(r) for r in rows]

    def tasks_with_active(
        self, states: Iterable[str]
    ) -> tuple[list[TaskRow], dict[str, list[TaskRow]]]:
        """In one read: tasks_in(states), and every active job's tasks() (each active job
        named, with no rows if it has none)."""
        wanted = sorted(states)
        marks = ",".join("?" * len(wanted))
        with self.snapshot():
            active = {r[0]: [] for r in self.db.execute("SELECT name FROM jobs "
                                                       "WHERE state = 'active'")}  # fmt: skip
            rows = self.db.execute(
                f"SELECT {TASK_COLUMNS}, jobs.state = 'active' FROM tasks LEFT JOIN jobs "  # noqa: S608 - only placeholders
                "ON tasks.job = jobs.name AND tasks.run = jobs.run "
                f"WHERE tasks.state IN ({marks}) OR jobs.state = 'active' "
                "ORDER BY tasks.job, tasks.task, tasks.idx, tasks.attempt",
                wanted,
            ).fetchall()
        in_states: list[TaskRow] = []
        wanted_states = set(wanted)
        for r in rows:
            row = _task(r[:-1])
            if row.state.value in wanted_states:
                in_states.append(row)
            if r[-1] and row.job in active:
                active[row.job].append(row)
        return in_states, active

    def task_by_unit(self, unit: str) -> TaskRow | None:
        row = self.db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE unit = ?",  # noqa: S608
                              (unit,)).fetchone()  # fmt: skip
        return None if row is None else _task(row)

    def last_attempts(self, job: str) -> dict[tuple[str, int], int]:
        """The highest attempt of each instance over every run: a new run numbers on from it."""
        rows = self.db.execute(
            "SELECT task, idx, MAX(attempt) AS attempt FROM tasks "
            "WHERE job = ? GROUP BY task, idx",
            (job,),
        )  # fmt: skip
        return {(r["task"], r["idx"]): r["attempt"] for r in rows}

    # -- hosts and frameworks ------------------------------------------------------------------

    def host_boots(self) -> dict[str, str]:
        rows = self.db.execute("SELECT name, boot FROM hosts WHERE boot != ''")
        return {r["name"]: r["boot"] for r in rows}

    def set_host_boot(self, name: str, boot: str) -> None:
        self.db.execute(
            "INSERT INTO hosts (name, boot, seen) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
            "SET boot=excluded.boot, seen=excluded.seen",
            (name, boot, self.clock()),
        )

    def drains(self) -> dict[str, float]:
        """Hosts being drained: name -> when the drain must be over (wall time)."""
        rows = self.db.execute("SELECT name, drain FROM hosts WHERE drain IS NOT NULL")
        return {r["name"]: r["drain"] for r in rows}

    def set_drain(self, name: str, deadline: float | None) -> None:
        """Start draining a host (until `deadline`), or stop (None)."""
        self.db.execute(
            "INSERT INTO hosts (name, boot, seen, drain) VALUES (?, '', ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET drain = excluded.drain",
            (name, self.clock(), deadline),
        )

    def framework_settings(self) -> dict[str, tuple[float | None, dict[str, int] | None]]:
        """Run-time changes of frameworks: name -> (weight, quota), None where unchanged."""
        rows = self.db.execute("SELECT name, weight, quota FROM frameworks ORDER BY name")
        return {r["name"]: (r["weight"], None if r["quota"] is None else json.loads(r["quota"]))
                for r in rows}  # fmt: skip

    def set_framework(
        self, name: str, weight: float | None, quota: Mapping[str, int] | None
    ) -> None:
        """Change a framework's weight or quota (None keeps what it was)."""
        self.db.execute(
            "INSERT INTO frameworks (name, weight, quota) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET "
            "weight = COALESCE(excluded.weight, frameworks.weight), "
            "quota = COALESCE(excluded.quota, frameworks.quota), "
            "version = frameworks.version + 1",
            (name, weight, None if quota is None else json.dumps(dict(quota))),
        )

    # -- runs of cron jobs ---------------------------------------------------------------------

    def schedulers(self) -> dict[str, SchedulerRow]:
        rows = self.db.execute("SELECT * FROM schedulers ORDER BY name")
        return {r["name"]: SchedulerRow(r["name"], r["id"], r["failover"]) for r in rows}

    def put_scheduler(self, row: SchedulerRow) -> None:
        self.db.execute(
            "INSERT INTO schedulers (name, id, failover, registered) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET failover = excluded.failover",
            (row.name, row.id, row.failover, self.clock()),
        )

    def drop_scheduler(self, name: str) -> None:
        self.db.execute("DELETE FROM schedulers WHERE name = ?", (name,))

    def put_run(self, run: RunRow) -> tuple[RunRow, bool]:
        """Store a run as a host reports it: new, or a change of its state (compare-and-set on
        the stored row's version). Returns the stored row and whether anything changed."""
        with self.transaction():
            found = self.db.execute("SELECT * FROM runs WHERE unit = ?", (run.unit,)).fetchone()
            now = self.clock()
            if found is None:
                self.db.execute(
                    "INSERT INTO runs (job, run, task, idx, timer, host, unit, seq, kind, "
                    "scheduled, fired, state, exit_code, signal, reason, ended, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.job, run.run, run.task, run.index, run.timer, run.host, run.unit,
                     run.seq, run.kind, run.scheduled, run.fired, run.state, run.exit_code,
                     run.signal, run.reason, run.ended, now),
                )  # fmt: skip
            else:
                old = _run(found)
                same = (old.state, old.exit_code, old.signal, old.reason, old.seq) == (
                    run.state, run.exit_code, run.signal, run.reason, run.seq)  # fmt: skip
                if same:
                    return old, False
                done = self.db.execute(
                    "UPDATE runs SET state = ?, exit_code = ?, signal = ?, reason = ?, "
                    "seq = CASE WHEN seq > ? THEN seq ELSE ? END, ended = COALESCE(ended, ?), "
                    "updated = ?, version = version + 1 WHERE id = ? AND version = ?",
                    (run.state, run.exit_code, run.signal, run.reason, run.seq, run.seq,
                     run.ended, now, old.id, old.version),
                )  # fmt: skip
                if done.rowcount != 1:
                    return old, False
            row = self.db.execute("SELECT * FROM runs WHERE unit = ?", (run.unit,)).fetchone()
        return _run(row), True

    def runs(self, job: str, limit: int = 20) -> list[RunRow]:
        """The job's latest runs (of every run of the job), newest first."""
        rows = self.db.execute(
            "SELECT * FROM runs WHERE job = ? ORDER BY fired DESC, id DESC LIMIT ?", (job, limit)
        )
        return [_run(r) for r in rows]

    def runs_in(self, states: Iterable[str]) -> list[RunRow]:
        wanted = sorted(states)
        marks = ",".join("?" * len(wanted))
        rows = self.db.execute(
            f"SELECT * FROM runs WHERE state IN ({marks}) ORDER BY fired, id",  # noqa: S608 - only placeholders
            wanted,
        )
        return [_run(r) for r in rows]

    def last_seqs(self) -> dict[str, dict[str, int]]:
        """Host -> timer -> the record number up to which its runs are stored for good: the
        highest, or just before the first run still running (so the host keeps telling of it
        until it ends, or says it is gone)."""
        rows = self.db.execute(
            "SELECT host, timer, MAX(seq) AS highest, "
            "MIN(CASE WHEN state = 'running' THEN seq END) AS open_from "
            "FROM runs GROUP BY host, timer"
        )
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            host, timer, highest, open_from = r["host"], r["timer"], r["highest"], r["open_from"]
            out.setdefault(host, {})[timer] = highest if open_from is None else open_from - 1
        return out

    def run_by_unit(self, unit: str) -> RunRow | None:
        row = self.db.execute("SELECT * FROM runs WHERE unit = ?", (unit,)).fetchone()
        return None if row is None else _run(row)


def _run(row: sqlite3.Row) -> RunRow:
    return RunRow(
        row["id"], row["job"], row["run"], row["task"], row["idx"], row["timer"], row["host"],
        row["unit"], row["seq"], row["kind"], row["scheduled"], row["fired"], row["state"],
        row["exit_code"], row["signal"], row["reason"], row["ended"], row["version"],
    )  # fmt: skip


def _job(row: sqlite3.Row) -> JobRow:
    return JobRow(row["name"], row["framework"], row["type"], json.loads(row["spec"]),
                  row["inventory"], row["state"], row["submitted"], row["run"], row["seq"],
                  row["version"], row["spec_version"])  # fmt: skip


def _task(row: sqlite3.Row) -> TaskRow:
    """A row of TASK_COLUMNS (read by position: by name costs more than the rest together)."""
    (
        id_,
        job,
        run,
        task,
        idx,
        attempt,
        host,
        unit,
        state,
        exit_code,
        signal,
        reason,
        resources,
        ports,
        restarts,
        since,
        version,
        health,
        created,
        pins,
        job_version,
        healthy_since,
    ) = row
    return TaskRow(
        id_,
        intern(job),  # many rows name the same: kept once (a controller keeps its rows)
        run,
        intern(task),
        idx,
        attempt,
        intern(host),
        unit,
        STATES[state],
        exit_code,
        signal,
        reason,
        _resources(resources),
        _ports(ports),
        restarts,
        since,
        version,
        health,
        created,
        Pins.from_json(json.loads(pins)) if pins else None,
        job_version,
        healthy_since,
    )


STATES = {s.value: s for s in TaskState}


@functools.lru_cache(maxsize=4096)
def _resources(text: str) -> dict:
    """A row's resources (the tasks of a group share a handful of texts: decoded once each,
    and the rows of one text share it: read-only, as every row's fields)."""
    return json.loads(text)


NO_PORTS: list[int] = []  # shared by every row without ports: read-only


def _ports(text: str) -> list[int]:
    return NO_PORTS if text == "[]" else json.loads(text)


def _updated(row: TaskRow, status: TaskStatus, now: float) -> TaskRow:
    """`row` as update_task's statement leaves it."""
    return TaskRow(
        row.id, row.job, row.run, row.task, row.index, row.attempt, row.host, row.unit,
        status.state, row.exit_code if status.exit_code is None else status.exit_code,
        row.signal if status.signal is None else status.signal,
        row.reason if status.reason is None else status.reason, row.resources, row.ports,
        max(row.restarts, status.restarts), row.since if status.state == row.state else now,
        row.version + 1, row.health, row.created, row.pins, row.job_version, row.healthy_since,
    )  # fmt: skip
