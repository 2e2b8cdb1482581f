"""`meso controller --migrate-only` and --state URLs from the command line, on a real PostgreSQL
started by the suite: one line naming the problem, no password, nothing changed."""

import os
import subprocess
import sys

import psycopg

from meso_agentless.state.sqlite import SCHEMA_VERSION

MESO = [sys.executable, "-m", "meso_agentless"]


def meso(*args, env=None):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESO_")}, **(env or {})}
    return subprocess.run([*MESO, *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)  # fmt: skip


def test_migrate_only_makes_the_schema_and_refuses_a_newer_one(postgres):
    url = postgres.fresh_url()
    done = meso("controller", "--migrate-only", "--state", url)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (f"state {url.replace(postgres.password, '***')}: "
                                   f"schema {SCHEMA_VERSION}")  # fmt: skip
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        db.execute("UPDATE meta SET value = '42' WHERE key = 'schema'")
    done = meso("controller", "--migrate-only", env={"MESO_STATE": url})
    assert done.returncode == 2
    assert f"is schema 42, newer than this meso ({SCHEMA_VERSION}): upgrade meso first" in (
        done.stderr
    )
    assert postgres.password not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_wrong_password_or_no_server_is_one_line_without_the_password(postgres):
    wrong = postgres.url.replace(postgres.password, "s3cret-wrong")
    done = meso("controller", "--migrate-only", "--state", wrong)
    assert done.returncode == 2 and "s3cret-wrong" not in done.stderr
    assert "password authentication failed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = meso("controller", "--migrate-only", "--state", "postgresql://u:pw@127.0.0.1:1/x")
    assert done.returncode == 2 and ":pw@" not in done.stderr and "u:***@" in done.stderr


def test_embedded_commands_refuse_a_postgresql_state(tmp_path):
    done = meso("status", env={"MESO_STATE": "postgresql://meso:pw@db/meso",
                               "MESO_INVENTORY": str(tmp_path / "inv.yml")})  # fmt: skip
    assert done.returncode == 2
    assert "a postgresql:// state is only used through `meso controller`" in done.stderr
    assert "pw" not in done.stderr
