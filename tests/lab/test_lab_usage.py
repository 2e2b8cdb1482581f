"""What each lab host costs this machine, read from its own processes; a host that is
power-cycled is counted by its new processes."""

import pytest

from meso_agentless.lab import processes
from meso_agentless.lab.usage import lab_usage
from tests.conftest import LAB

pytestmark = pytest.mark.lab


def test_each_host_counts_its_own_processes_memory_and_disk(meso_lab):
    usage = lab_usage(meso_lab.name, [h.name for h in meso_lab.hosts])
    assert [u.name for u in usage] == [h.name for h in meso_lab.hosts]
    for u in usage:
        # nspawn, the host's systemd, journald, sshd at least
        assert u.processes >= 4, u
        assert 0 < u.pss <= u.rss, u
        assert u.disk > 0, u  # its host key, machine id and journal over the image
        assert u.cpu > 0, u  # booting took some
    # the hosts share the image's pages: each one's fair share is well under what it maps
    assert sum(u.pss for u in usage) < sum(u.rss for u in usage) / 2


def test_a_restarted_host_is_counted_by_its_new_processes(meso_lab):
    host = f"{LAB}-2"
    before = processes.ProcessRecord.load(meso_lab.paths.host(host) / "pid")
    meso_lab.restart(host)
    after = processes.ProcessRecord.load(meso_lab.paths.host(host) / "pid")
    assert before is not None and after is not None and after.pid != before.pid
    assert not before.alive()
    (usage,) = lab_usage(meso_lab.name, [host])
    assert usage.processes >= 4 and usage.pss > 0
