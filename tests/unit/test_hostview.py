"""Each host as plain data (controller/hostview.py): what GET /v1/hosts validates and what the
embedded `meso hosts` prints as it is, so both say the same, field for field and type for type;
and the read-only scan for units nobody claims, as the controller's own cycle finds them."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meso_agentless.controller.claims import state_mark, unclaimed_units
from meso_agentless.controller.hostview import cluster_info, host_infos
from meso_agentless.controller.service import Service
from meso_agentless.controller.views import Cluster, HostInfo, HostList
from meso_agentless.core.health import HostState
from meso_agentless.core.model import Framework
from meso_agentless.spec import Job
from meso_agentless.testing.fakes import FakeCluster

JOB = {"job": "web", "type": "service", "framework": "web",
       "tasks": [{"name": "server", "count": 3, "command": ["sleep", "infinity"],
                  "resources": {"cpus": 0.5, "mem": "64MiB"}}]}  # fmt: skip


@pytest.fixture
def cluster(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (4, "8GiB"), "h3": (2, "4GiB")},
                             (Framework("web", 2.0),))  # fmt: skip
    cluster.step()
    cluster.controller.submit(Job.model_validate(JOB))
    cluster.step()
    # a unit of meso's form that nobody launched, holding resources on h1
    cluster.plane.launch("h1", {"unit": "meso-stray_t_0_1", "cpus": 250, "mem": 1 << 20})
    cluster.controller.drain("h3", 600)
    cluster.step()
    cluster.plane.cut("h2")
    cluster.step(3.0)  # h2: suspect, as the controller judges it now
    return cluster


def infos_of(cluster):
    c = cluster.controller
    return host_infos(c.fleet.views(), c.nodes, c.store, c.clock.time(), c.unclaimed,
                      c.host_states)  # fmt: skip


def test_the_plain_view_is_what_the_api_models_validate_it_to(cluster):
    infos = infos_of(cluster)
    validated = HostList(hosts=[HostInfo(**i) for i in infos]).model_dump(mode="json")["hosts"]
    assert json.dumps(infos) == json.dumps(validated)  # same values, types and field order
    by_host = {i["host"]: i for i in infos}
    assert [by_host[h]["state"] for h in ("h1", "h2", "h3")] == ["up", "suspect", "drained"]
    assert by_host["h1"]["unclaimed"] == ["meso-stray_t_0_1"]
    assert by_host["h3"]["drain_deadline"] is not None
    assert sum(i["tasks"] for i in infos) == 3
    assert cluster_info(infos, "active") == Cluster(
        **cluster_info(infos, "active")).model_dump(mode="json")  # fmt: skip


def test_the_service_answers_with_the_same_function(cluster):
    service = Service(cluster.controller)  # what the API answers with
    assert service.hosts().model_dump(mode="json")["hosts"] == infos_of(cluster)
    assert service.cluster().hosts == {"drained": 1, "suspect": 1, "up": 1}


def test_a_read_finds_the_units_nobody_claims_as_the_cycle_does(cluster):
    c = cluster.controller
    views = c.fleet.views()
    found = unclaimed_units(views, c.store, state_mark(c.store.identity), c.unclaimed)
    assert found == c.unclaimed == {"h1": ["meso-stray_t_0_1"]}
    # a silent host's units are not looked at; a read that knew nothing before knows none
    cluster.plane.cut("h1")
    cluster.step(6.0)
    views = c.fleet.views()
    assert views["h1"].state == HostState.UNREACHABLE
    assert unclaimed_units(views, c.store, state_mark(c.store.identity)) == {}
    assert c.unclaimed == {"h1": ["meso-stray_t_0_1"]}  # the cycle keeps the last found
    known = unclaimed_units(views, c.store, state_mark(c.store.identity), c.unclaimed)
    assert known == c.unclaimed


def test_embedded_hosts_imports_neither_pydantic_nor_the_controller(tmp_path):
    """`meso hosts` without MESO_ADDR, on a host that refuses connections: it is reported
    unreachable with the error paramiko gives, and neither the job file and view models
    (pydantic) nor the controller's modules are imported."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(f"all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n"
                         f"      ansible_port: {port}\n"
                         f"      meso_known_hosts_file: {tmp_path / 'known_hosts'}\n")  # fmt: skip
    (tmp_path / "known_hosts").write_text("")
    env = {"MESO_STATE": str(tmp_path / "state.db"), "MESO_INVENTORY": str(inventory),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])}  # fmt: skip
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "meso_agentless", "hosts",
                           "-o", "json"], capture_output=True, text=True, env=env, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (host,) = json.loads(done.stdout)["hosts"]
    assert (host["host"], host["state"], host["reachable"]) == ("h1", "unreachable", False)
    assert host["error"] == f"h1: 127.0.0.1: NoValidConnectionsError: {paramiko_says(port)}"
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert "pydantic" not in imported and "meso_agentless.spec" not in imported
    assert not {m for m in imported if m.startswith("meso_agentless.controller.")} - {
        "meso_agentless.controller.claims", "meso_agentless.controller.clock",
        "meso_agentless.controller.embedded", "meso_agentless.controller.events",
        "meso_agentless.controller.fleet", "meso_agentless.controller.hostview",
        "meso_agentless.controller.reading", "meso_agentless.controller.unitstatus"}  # fmt: skip


def paramiko_says(port: int) -> str:
    """What paramiko's own connect raises for a refused port."""
    import paramiko

    client = paramiko.SSHClient()
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError) as refused:
        client.connect("127.0.0.1", port=port, timeout=5)
    return str(refused.value)
