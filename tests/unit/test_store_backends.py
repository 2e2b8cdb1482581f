"""The store's whole interface, on SQLite and on a real PostgreSQL (started by the suite), the
schema they share, and the controllers' lease in PostgreSQL."""

import sqlite3
import threading

import psycopg
import pytest

from meso_agentless.core.tasks import TaskState, TaskStatus
from meso_agentless.errors import UsageError
from meso_agentless.state.postgres import PgLease, PgStore, open_store, redact
from meso_agentless.state.sqlite import SCHEMA_VERSION, Store
from meso_agentless.state.store import Intent, RunRow, SchedulerRow


def run_row(unit: str, seq: int, state: str = "running", **changes) -> RunRow:
    fields = {"id": 0, "job": "c", "run": 1, "task": "t", "index": 0, "timer": "meso-c_t_0_1",
              "host": "h1", "unit": unit, "seq": seq, "kind": "schedule", "scheduled": 60.0,
              "fired": 61.5, "state": state, "exit_code": None, "signal": None, "reason": None,
              "ended": None, "version": 0}  # fmt: skip
    return RunRow(**{**fields, **changes})


def test_hosts_frameworks_schedulers_and_health(state):
    store = open_store(state, clock=lambda: 1_700_000_000.25)
    store.set_host_boot("h1", "boot-a")
    store.set_drain("h2", 1_700_000_100.5)  # a host never sampled can be drained
    assert store.host_boots() == {"h1": "boot-a"}
    assert store.drains() == {"h2": 1_700_000_100.5}
    store.set_drain("h2", None)
    assert store.drains() == {}
    store.set_framework("fw", 2.5, None)
    store.set_framework("fw", None, {"cpus": 4000})
    assert store.framework_settings() == {"fw": (2.5, {"cpus": 4000})}
    store.put_scheduler(SchedulerRow("sweep", "id-1", 30.0))
    store.put_scheduler(SchedulerRow("sweep", "id-2", 60.0))  # the id stays its first
    assert store.schedulers() == {"sweep": SchedulerRow("sweep", "id-1", 60.0)}
    store.drop_scheduler("sweep")
    assert store.schedulers() == {}
    store.put_job("j", "fw", "service", {"job": "j"}, "inv")
    store.add_intents([Intent("j", "t", i, 1, "h1", f"meso-j_t_{i}_1", {}, ()) for i in (0, 1)])
    first, second = store.tasks("j")
    assert (first.since, first.created) == (1_700_000_000.25, 1_700_000_000.25)  # not rounded
    healthy = store.set_health(first, "healthy")
    assert healthy is not None and healthy.health == "healthy"
    assert store.set_health(first, "unhealthy") is None  # an older row: nothing written
    assert store.drop_intent(second) and not store.drop_intent(second)
    running = store.update_task(healthy, TaskStatus(TaskState.RUNNING, restarts=2))
    again = store.update_task(running, TaskStatus(TaskState.RUNNING, restarts=1))
    assert again.restarts == 2 and again.since == running.since  # never fewer restarts
    assert [r.unit for r in store.tasks_in(["running", "staging"])] == ["meso-j_t_0_1"]
    assert store.task_by_unit("meso-j_t_0_1").id == first.id
    assert store.task_by_unit("meso-nope") is None


def test_runs_of_cron_timers(state):
    store = open_store(state)
    store.put_job("c", "fw", "cron", {"job": "c"}, "inv")
    row, changed = store.put_run(run_row("meso-c_t_0_1-r60", 1))
    assert changed and row.state == "running"
    assert store.put_run(run_row("meso-c_t_0_1-r60", 1)) == (row, False)
    store.put_run(run_row("meso-c_t_0_1-r120", 2, "finished", exit_code=0, ended=125.0,
                          scheduled=120.0, fired=121.0))  # fmt: skip
    assert store.last_seqs() == {"h1": {"meso-c_t_0_1": 0}}  # run 1 still running
    done, changed = store.put_run(run_row("meso-c_t_0_1-r60", 1, "failed", exit_code=3,
                                          ended=70.0))  # fmt: skip
    assert changed and (done.state, done.exit_code, done.ended) == ("failed", 3, 70.0)
    assert store.last_seqs() == {"h1": {"meso-c_t_0_1": 2}}
    assert [r.unit for r in store.runs("c")] == ["meso-c_t_0_1-r120", "meso-c_t_0_1-r60"]
    assert [r.unit for r in store.runs("c", limit=1)] == ["meso-c_t_0_1-r120"]
    assert [r.unit for r in store.runs_in(["failed"])] == ["meso-c_t_0_1-r60"]
    assert store.run_by_unit("meso-c_t_0_1-r60").to_json()["exit_code"] == 3


def test_transactions_roll_back_whole_and_snapshots_hold_still(state):
    store = open_store(state)
    with pytest.raises(RuntimeError), store.transaction():
        store.put_job("a", "fw", "batch", {}, "inv")
        with store.transaction():  # nested: joins the outer one
            store.set_framework("fw", 3.0, None)
        raise RuntimeError("abandoned")
    assert store.jobs() == [] and store.framework_settings() == {}
    store.put_job("a", "fw", "batch", {}, "inv")
    other = open_store(state)
    with store.snapshot():
        assert [j.name for j in store.jobs()] == ["a"]
        writer = threading.Thread(target=other.put_job, args=("b", "fw", "batch", {}, "inv"))
        writer.start()
        writer.join()
        if isinstance(store, PgStore):  # repeatable read: the snapshot does not move
            assert [j.name for j in store.jobs()] == ["a"]
    assert [j.name for j in store.jobs()] == ["a", "b"]
    assert [j.seq for j in store.jobs()] == [1, 2]


def test_both_stores_have_the_same_tables_and_columns(tmp_path, postgres):
    lite = Store(tmp_path / "state.db")
    tables = [r[0] for r in lite.db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                            "AND name NOT LIKE 'sqlite_%'")]  # fmt: skip
    lite_columns = {t: sorted(r[1] for r in lite.db.execute(f"PRAGMA table_info({t})"))
                    for t in tables}  # fmt: skip
    pg = PgStore(postgres.fresh_url())
    rows = pg.db.execute("SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = 'public'").fetchall()  # fmt: skip
    pg_columns: dict[str, list[str]] = {}
    for table, column in rows:
        pg_columns.setdefault(table, []).append(column)
    leader = pg_columns.pop("leader")  # the controllers' lease: only where there are several
    assert sorted(leader) == ["addr", "epoch", "expires", "holder", "id"]
    assert {t: sorted(c) for t, c in pg_columns.items()} == lite_columns
    assert len(lite_columns) == 9  # with job_versions and deployments (schema 6)


def test_migrations_run_once_and_a_newer_schema_is_refused(postgres):
    url = postgres.fresh_url()
    stores = []
    openers = [threading.Thread(target=lambda: stores.append(PgStore(url))) for _ in range(3)]
    for t in openers:
        t.start()
    for t in openers:
        t.join()
    assert len(stores) == 3 and len({s.identity for s in stores}) == 1
    assert stores[0].schema_version() == SCHEMA_VERSION
    stores[0].db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(
        UsageError, match=rf"is schema 99, newer than this meso \({SCHEMA_VERSION}\)"
    ) as refused:
        PgStore(url)
    assert postgres.password not in str(refused.value) and ":***@" in str(refused.value)


def test_an_unreachable_or_refusing_database_is_one_line_without_the_password(postgres):
    wrong = postgres.url.replace(postgres.password, "not-the-password")
    with pytest.raises(UsageError) as refused:
        PgStore(wrong)
    message = str(refused.value)
    assert message.startswith("state postgresql://meso:***@127.0.0.1:")
    assert "not-the-password" not in message and "\n" not in message
    assert "password authentication failed" in message
    assert redact("postgresql://u:secret@db:5432/meso") == "postgresql://u:***@db:5432/meso"
    assert redact("postgresql://db/meso") == "postgresql://db/meso"


def test_one_leader_at_a_time_with_a_rising_epoch(postgres):
    store = PgStore(postgres.fresh_url())
    a = PgLease(store, "a", "http://a:4646", ttl=60)
    b = PgLease(store, "b", "http://b:4646", ttl=60)
    assert a.acquire() == 1
    assert b.acquire() is None  # a's lease is live
    assert a.renew(1) and not b.renew(1)
    assert b.leader() == ("http://a:4646", 1, True)
    a.release(1)  # a clean stop: the standby need not wait
    assert b.leader()[2] is False
    assert b.acquire() == 2
    assert not a.renew(1)  # deposed: it cannot extend what is no longer its own
    assert a.acquire() is None
    assert a.leader() == ("http://b:4646", 2, True)


def test_a_lease_not_renewed_expires_by_the_databases_clock(postgres):
    store = PgStore(postgres.fresh_url())
    a = PgLease(store, "a", "http://a:4646", ttl=60)
    b = PgLease(store, "b", "http://b:4646", ttl=60)
    assert a.acquire() == 1
    # time passes on the database's clock: the lease ends as if a had been silent for 60 s
    store.db.execute("UPDATE leader SET expires = clock_timestamp() - interval '1 second'")
    assert b.acquire() == 2 and not a.renew(1)


def test_a_sqlite_state_is_not_a_url_and_stays_sqlite(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    assert type(store) is Store
    assert isinstance(store.db, sqlite3.Connection)
    assert (tmp_path / "s.db").exists()


def test_a_store_outlives_a_restart_of_the_database(postgres):
    """The database goes away and comes back: a call in between fails (no password in it), and
    drops its broken connection; the next call connects again; nothing written is lost."""
    store = PgStore(postgres.fresh_url())
    store.put_job("j", "fw", "batch", {"job": "j"}, "inv")
    postgres.halt()
    try:
        with pytest.raises((UsageError, psycopg.OperationalError)) as failed:
            store.jobs()
        assert postgres.password not in str(failed.value)
    finally:
        postgres.resume()
    assert [j.name for j in store.jobs()] == ["j"]
    store.put_job("k", "fw", "batch", {"job": "k"}, "inv")
    assert [j.name for j in store.jobs()] == ["j", "k"]


def test_one_read_of_the_attempts_out_there_and_of_every_active_jobs_run(state):
    store = open_store(state)
    for name in ("a", "b", "idle"):
        store.put_job(name, "fw", "batch", {"job": name}, "inv")
    store.add_intents([Intent(j, "t", i, 1, "h1", f"meso-{j}_t_{i}_1", {"cpus": 1000}, ())
                       for j in ("a", "b") for i in (0, 1)])  # fmt: skip
    a0, a1 = store.tasks("a")
    store.update_task(a1, TaskStatus(TaskState.FINISHED, exit_code=0))
    b_job = store.job("b")
    store.update_job(b_job, state="done")  # its staging rows are still out there
    store.put_job("b", "fw", "batch", {"job": "b", "v": 2}, "inv")  # a new run: none yet
    wanted = ["staging", "running"]
    out_there, active = store.tasks_with_active(wanted)
    assert out_there == store.tasks_in(wanted)
    assert active == {"a": store.tasks("a"), "b": [], "idle": []}
    assert [r.state.value for r in active["a"]] == ["staging", "finished"]
    if isinstance(store, Store) and not isinstance(store, PgStore):
        mark = store.outside_writes()
        assert store.outside_writes() == mark  # nobody wrote
        store.update_task(a0, TaskStatus(TaskState.RUNNING))
        assert store.outside_writes() == mark  # its own writes are counted by `changes`
        other = Store(store.path)
        other.set_drain("h1", 5.0)
        other.close()
        assert store.outside_writes() != mark
    else:
        assert store.outside_writes() is None


def test_a_connection_the_server_dropped_is_replaced_for_a_read_but_a_write_is_never_resent(
    postgres,
):
    url = postgres.fresh_url()
    store, admin = PgStore(url), PgStore(url)
    store.put_job("j", "fw", "batch", {"job": "j"}, "inv")
    killed = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ?"

    def drop() -> None:  # as a server restart or an outage does to every idle connection
        pid = store.db.raw.info.backend_pid
        admin.db.execute(killed, (pid,))

    drop()
    assert [j.name for j in store.jobs()] == ["j"]  # a read: on a new connection
    drop()
    with store.snapshot():  # the start of a transaction: the same
        assert store.job("j") is not None
    drop()
    with pytest.raises(psycopg.OperationalError):  # a write may have happened: never resent
        store.db.execute("UPDATE jobs SET state = 'killed' WHERE name = 'j'")
    assert store.job("j").state == "active"  # and the next statement has a new connection
