"""The reliability suite's lab (five nspawn hosts, `mrel-1`..`mrel-5`, or $MESO_TEST_REL_LAB),
its random seed ($MESO_TEST_SEED, else a fresh one, printed), and a summary of every
scenario's figures at the end of the session."""

import os
import random
from collections.abc import Iterator

import pytest

from meso_agentless.testing.lab import LabHandle, running_lab
from meso_agentless.testing.reliability import Result
from tests.conftest import REL_LAB

RESULTS = pytest.StashKey[list[Result]]()


@pytest.fixture(scope="session")
def rel_lab() -> Iterator[LabHandle]:
    if os.geteuid() != 0:
        pytest.fail("reliability tests need root (or deselect them with -m 'not reliability')")
    with running_lab(REL_LAB, hosts=5) as lab:
        yield lab


@pytest.fixture(scope="session")
def seed() -> int:
    return int(os.environ.get("MESO_TEST_SEED") or random.randrange(1 << 32))


@pytest.fixture
def record(request, seed):
    """Print a scenario's figures (and keep them for the session's summary)."""

    def keep(result: Result) -> Result:
        result.figure("seed", seed)
        request.config.stash.setdefault(RESULTS, []).append(result)
        print(result.report())
        return result

    return keep


def pytest_terminal_summary(terminalreporter, config):
    results = config.stash.get(RESULTS, [])
    if results:
        terminalreporter.section("reliability figures")
        for result in results:
            terminalreporter.write_line(result.report())
