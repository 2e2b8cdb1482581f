import os

pytest_plugins = ["meso_agentless.testing.pytest_plugin"]

# Lab names of the session's fixtures (see meso_agentless.testing.pytest_plugin).
LAB = os.environ.get("MESO_TEST_LAB", "mtest")
VM_LAB = os.environ.get("MESO_TEST_VM_LAB", "mvm")
REL_LAB = os.environ.get("MESO_TEST_REL_LAB", "mrel")  # tests/reliability: five hosts


# -- the store on SQLite and on a real PostgreSQL (started by the suite itself) ----------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this session (Debian's, unprivileged, on loopback, temporary)."""
    from meso_agentless.testing.postgres import TempPostgres

    with TempPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request, tmp_path) -> str:
    """A new, empty state: a SQLite file's path or a postgresql:// URL (each test its own)."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return request.getfixturevalue("postgres").fresh_url()
