"""What a job needs next (pure), and the store that remembers it (SQLite and PostgreSQL)."""

import multiprocessing
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from meso_agentless.core.jobs import Launch, TaskPolicy, decide
from meso_agentless.core.tasks import TaskState, TaskStatus
from meso_agentless.errors import UsageError
from meso_agentless.state.postgres import is_url, open_store
from meso_agentless.state.sqlite import SCHEMA, SCHEMA_VERSION, Conflict, Store
from meso_agentless.state.store import Intent

INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


@dataclass
class A:
    task: str
    index: int
    attempt: int
    state: str
    host: str = "h1"
    unit: str = ""
    exit_code: int | None = None
    reason: str | None = None
    since: float = 0.0


ON_FAILURE = [TaskPolicy("t", 2, "on-failure", 2)]


def test_a_new_batch_job_launches_every_instance():
    d = decide("batch", ON_FAILURE, [])
    assert d.launch == [Launch("t", 0, 1), Launch("t", 1, 1)]


def test_failures_are_retried_until_the_attempts_run_out():
    d = decide("batch", ON_FAILURE, [A("t", 0, 1, "failed", exit_code=3), A("t", 1, 1, "finished")])
    assert d.launch == [Launch("t", 0, 2)] and d.succeeded == 1
    d = decide("batch", ON_FAILURE, [A("t", 0, a, "failed") for a in (1, 2, 3)]
               + [A("t", 1, 1, "finished")])  # fmt: skip
    assert d.launch == [] and [a.attempt for a in d.failed] == [3] and d.settled
    never = [TaskPolicy("t", 1, "never", 5)]
    assert decide("batch", never, [A("t", 0, 1, "killed")]).failed


def test_waiting_missing_lost_and_scaled_away():
    d = decide("batch", ON_FAILURE, [A("t", 0, 1, "running"), A("t", 1, 1, "unreachable")])
    assert d.launch == [] and d.waiting == 2 and not d.settled
    d = decide("batch", ON_FAILURE, [A("t", 0, 1, "missing"), A("t", 1, 1, "running")])
    assert d.launch == [Launch("t", 0, 1, again=True)]
    service = [TaskPolicy("s", 1, "always", 3)]
    lost = decide("service", service, [A("s", 0, 1, "unreachable", since=0)], now=100)
    assert lost.launch == [Launch("s", 0, 2, avoid="h1")] and len(lost.lost) == 1
    fresh = decide("service", service, [A("s", 0, 1, "unreachable", since=90)], now=100)
    assert fresh.launch == [] and fresh.waiting == 1
    scaled = decide("service", service, [A("s", 0, 1, "running"), A("s", 1, 1, "running")])
    assert [(a.task, a.index) for a in scaled.stop] == [("s", 1)]


def test_a_new_run_numbers_attempts_after_earlier_runs():
    d = decide("batch", ON_FAILURE, [], numbered_from={("t", 0): 3})
    assert d.launch == [Launch("t", 0, 4), Launch("t", 1, 1)]


def test_store_keeps_jobs_and_attempts_across_processes(state):
    store = open_store(state)
    store.put_job("j", "fw", "batch", {"job": "j"}, "inv.yml")
    store.add_intents([Intent("j", "t", 0, 1, "h1", "meso-j_t_0_1", {"cpus": 100}, (31000,))])
    [row] = store.tasks("j")
    assert store.update_task(row, TaskStatus(TaskState.FAILED, exit_code=3)) is not None
    store.close()
    again = open_store(state)
    [row] = again.tasks("j")
    assert (row.state, row.exit_code, row.ports, row.resources) == ("failed", 3, [31000],
                                                                     {"cpus": 100})  # fmt: skip
    if not is_url(state):
        assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    else:
        assert again.schema_version() == SCHEMA_VERSION
    with pytest.raises(INTEGRITY_ERRORS):  # a unit is launched once: the key says so
        again.add_intents([Intent("j", "t", 0, 1, "h2", "meso-j_t_0_1", {}, ())])
    assert len(again.tasks("j")) == 1  # the failed transaction left nothing
    again.update_job(again.job("j"), state="done")
    again.put_job("j", "fw", "batch", {"job": "j"}, "inv.yml")  # run again: a new run
    assert again.tasks("j") == [] and again.last_attempts("j") == {("t", 0): 1}
    assert again.job("j").run == 2
    assert again.identity == open_store(state).identity and len(again.identity) == 12


def test_every_change_is_a_compare_and_set_on_the_row_version(state):
    """A writer holding an older row changes nothing: finished is never overwritten by lost."""
    store = open_store(state)
    store.put_job("j", "fw", "batch", {"job": "j"}, "inv")
    store.add_intents([Intent("j", "t", 0, 1, "h1", "meso-j_t_0_1", {}, ())])
    [stale] = store.tasks("j")
    assert store.update_task(stale, TaskStatus(TaskState.FINISHED, exit_code=0)) is not None
    assert store.update_task(stale, TaskStatus(TaskState.LOST)) is None
    assert store.tasks("j")[0].state == "finished"
    job = store.job("j")
    store.update_job(job, spec={"job": "j", "changed": True})
    with pytest.raises(Conflict):
        store.update_job(job, state="killed")
    assert store.job("j").state == "active"


def test_a_version_1_state_is_migrated_in_place(tmp_path):
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(f"{SCHEMA}\nPRAGMA user_version=1;")
    db.execute("INSERT INTO jobs VALUES ('old', 'fw', 'batch', '{}', 'inv', 'active', 1.0, 1)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    job = store.job("old")
    assert (job.version, job.seq, job.state) == (1, 1, "active")
    store.set_framework("fw", 2.0, {"cpus": 0})
    assert store.framework_settings() == {"fw": (2.0, {"cpus": 0})}


def _open_store(path: str) -> int:
    return Store(Path(path)).db.execute("PRAGMA user_version").fetchone()[0]


def test_processes_opening_a_new_state_at_once_make_its_schema_once(tmp_path):
    # the version is read under the write lock: before, two processes both saw 0 and the
    # second failed with "table jobs already exists" (a reader started beside `meso run`)
    # (and the journal mode: changing it does not wait for a lock, so it is tried again)
    for attempt in range(10):
        path = tmp_path / f"state{attempt}.db"
        with ProcessPoolExecutor(8, mp_context=multiprocessing.get_context("fork")) as pool:
            versions = list(pool.map(_open_store, [str(path)] * 8))
        assert versions == [SCHEMA_VERSION] * 8


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(UsageError, match="schema 99, newer than this meso"):
        Store(path)
