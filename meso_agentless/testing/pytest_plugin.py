"""pytest fixtures for tests against real lab hosts (root required).

Enable with `pytest -p meso_agentless.testing.pytest_plugin` or `pytest_plugins = [...]` in a
conftest. `meso_lab` is three systemd-nspawn hosts, started once per session; `meso_vm_lab` is
one QEMU guest with its own kernel, where cgroup v2 limits are enforced. Their lab names are
`mtest` and `mvm`, or $MESO_TEST_LAB and $MESO_TEST_VM_LAB (two test runs side by side).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from meso_agentless.testing.lab import LabHandle, running_lab


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run them with sudo (or deselect with -m 'not lab')")


@pytest.fixture(scope="session")
def meso_lab() -> Iterator[LabHandle]:
    """Three nspawn hosts, `mtest-1`..`mtest-3`, up for the whole session."""
    _require_root()
    with running_lab(os.environ.get("MESO_TEST_LAB", "mtest"), hosts=3) as lab:
        yield lab


@pytest.fixture(scope="session")
def meso_vm_lab() -> Iterator[LabHandle]:
    """One QEMU guest, `mvm-1`, with 1 CPU and 1 GiB, up for the whole session."""
    _require_root()
    name = os.environ.get("MESO_TEST_VM_LAB", "mvm")
    with running_lab(name, hosts=1, mode="vm", cpus=1, mem_mib=1024) as lab:
        yield lab


@pytest.fixture(scope="session")
def meso_numa_vm_lab() -> Iterator[LabHandle]:
    """One QEMU guest, `mvmn-1`, with 4 CPUs on 2 NUMA nodes (0-1 and 2-3) and 1.5 GiB, for the
    big-server tests (dedicated cores, NUMA memory, devices); lab `${MESO_TEST_VM_LAB}n`."""
    _require_root()
    name = os.environ.get("MESO_TEST_VM_LAB", "mvm") + "n"
    with running_lab(name, hosts=1, mode="vm", cpus=4, mem_mib=1536, numa=2) as lab:
        yield lab
