"""The inventory through ansible-core's loader: hosts, group_vars, host_vars, and bad values."""

from pathlib import Path

import pytest

from meso_agentless.core.model import Framework
from meso_agentless.errors import UsageError
from meso_agentless.inventory import DEFAULT_PORTS, load_inventory, parse_node

EXAMPLE = Path(__file__).parents[2] / "inventories" / "example"
GiB = 2**30


def test_example_inventory_with_group_and_host_vars():
    inventory = load_inventory(str(EXAMPLE))
    nodes = {n.name: n for n in inventory.nodes}
    assert sorted(nodes) == ["node-a1", "node-a2", "node-b1"]
    a1 = nodes["node-a1"].to_host()
    assert a1.capacity == {"cpus": 62_000, "mem": 248 * GiB, "disk": 2 * 2**40}  # less reserved
    assert a1.attributes == {"rack": "a", "ssd": "true"}
    assert a1.reservations == {"analytics": {"cpus": 16_000, "mem": 64 * GiB}}
    assert a1.ports == ((31000, 32000),)
    b1 = nodes["node-b1"].to_host()
    assert b1.capacity["gpus"] == 4 and b1.capacity["cpus"] == 94_000  # host_vars override
    assert nodes["node-b1"].address == "192.0.2.21"
    assert sorted(inventory.frameworks, key=lambda f: f.name) == [
        Framework("analytics", 2.0, {"cpus": 96_000, "mem": 384 * GiB}),
        Framework("batch", 1.0, {"cpus": 32_000}),
        Framework("web", 1.0, None),
    ]


def test_sampled_capacity_is_overridden_by_declared(tmp_path):
    node = parse_node("h", {"meso_resources": {"mem": "4GiB"}, "meso_reserved": {"cpus": 1}})
    host = node.to_host(sampled={"cpus": 8000, "mem": 16 * GiB, "disk": 100 * GiB})
    assert host.capacity == {"cpus": 7000, "mem": 4 * GiB, "disk": 100 * GiB}
    assert host.ports == DEFAULT_PORTS


@pytest.mark.parametrize(
    ("hostvars", "message"),
    [
        ({"meso_resources": {"mem": "4XB"}}, "host h: meso_resources.mem '4XB' is not a size"),
        ({"meso_resources": "lots"}, "host h: meso_resources must be a mapping"),
        ({"meso_resources": {"ports": "70000-70001"}}, "not a port range within 1-65535"),
        ({"meso_reserved": {"cpus": -1}}, "host h: meso_reserved.cpus must not be negative"),
        ({"meso_reservations": {"web": {"cpus": "x"}}}, "meso_reservations.web.cpus must be"),
        ({"ansible_port": "ssh"}, "host h: ansible_port 'ssh' is not a port"),
    ],
)
def test_bad_host_variables_are_named(hostvars, message):
    with pytest.raises(UsageError) as caught:
        parse_node("h", hostvars)
    assert message in str(caught.value)


def write_inventory(tmp_path, text):
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return str(path)


def test_bad_inventories_get_one_line(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_inventory(str(tmp_path / "missing.yml"))
    with pytest.raises(UsageError, match="YAML parsing failed") as caught:
        load_inventory(write_inventory(tmp_path, "all:\n  hosts:\n    a: [1,\n"))
    assert "\n" not in str(caught.value)
    bad_fw = "all:\n  vars:\n    meso_frameworks: {web: {weight: -1}}\n  hosts:\n    a: {}\n"
    with pytest.raises(UsageError, match=r"meso_frameworks.web.weight must be a number from 0.001"):
        load_inventory(write_inventory(tmp_path, bad_fw))
    unknown = "all:\n  vars:\n    meso_frameworks: {web: {wieght: 2}}\n  hosts:\n    a: {}\n"
    with pytest.raises(UsageError, match=r"meso_frameworks\.web: unknown field wieght"):
        load_inventory(write_inventory(tmp_path, unknown))
    differ = (
        "all:\n  hosts:\n    a: {meso_frameworks: {web: {weight: 1}}}\n"
        "    b: {meso_frameworks: {web: {weight: 2}}}\n"
    )
    with pytest.raises(UsageError, match="meso_frameworks differs between hosts a and b"):
        load_inventory(write_inventory(tmp_path, differ))
    with pytest.raises(UsageError, match="no hosts"):
        load_inventory(write_inventory(tmp_path, "all:\n  vars: {x: 1}\n"))


def test_without_a_meso_nodes_group_every_host_is_a_node(tmp_path):
    inventory = load_inventory(write_inventory(tmp_path, "all:\n  hosts:\n    a: {}\n    b: {}\n"))
    assert [n.name for n in inventory.nodes] == ["a", "b"]
    assert inventory.frameworks == ()


TWO_HOSTS = (
    "all:\n  vars:\n    meso_frameworks: {FRAMEWORKS}\n  hosts:\n"
    "    a: {meso_resources: {cpus: 8, mem: 32GiB}, meso_reserved: {cpus: 1}}\n"
    "    b: {meso_resources: {cpus: 8, mem: 32GiB}}\n"
)


def test_guarantees_and_limits_are_read(tmp_path):
    frameworks = (
        "{web: {guarantee: {cpus: 6, mem: 24GiB}, limit: {cpus: 10}},"
        " batch: {weight: 2, guarantee: {cpus: 9}, quota: {cpus: 12}}}"
    )
    text = TWO_HOSTS.replace("{FRAMEWORKS}", frameworks)
    inventory = load_inventory(write_inventory(tmp_path, text))
    assert sorted(inventory.frameworks, key=lambda f: f.name) == [
        Framework("batch", 2.0, {"cpus": 12_000}, guarantee={"cpus": 9_000}),
        Framework("web", 1.0, {"cpus": 10_000}, guarantee={"cpus": 6_000, "mem": 24 * GiB}),
    ]


@pytest.mark.parametrize(
    ("frameworks", "message"),
    [
        # 8 + 7 declared CPUs (one reserved on a): 9 + 7 is too much, and both are named
        (
            "{web: {guarantee: {cpus: 9}}, batch: {guarantee: {cpus: 7}}, x: {}}",
            "meso_frameworks: the guarantees of batch, web add up to 16 cpus, more than the "
            "cluster's 15",
        ),
        (
            "{web: {guarantee: {mem: 65GiB}}}",
            "the guarantees of web add up to 65GiB mem, more than the cluster's 64GiB",
        ),
        (
            "{web: {guarantee: {cpus: 4}, limit: {cpus: 2}}}",
            "meso_frameworks.web.guarantee.cpus: 4 is more than its limit 2",
        ),
        (
            "{web: {limit: {cpus: 2}, quota: {cpus: 2}}}",
            "meso_frameworks.web: give limit or quota (its old name), not both",
        ),
        ("{web: {guarantee: {cpus: -1}}}", "meso_frameworks.web.guarantee.cpus must not be"),
        ("{web: {guarantee: [1]}}", "meso_frameworks.web must be a mapping"),
        ("{web: {guarantee: {ports: 2}}}", "guarantee.ports: ports cannot be guaranteed"),
        ("{web: {guarantee: {cpus: lots}}}", "meso_frameworks.web.guarantee.cpus"),
    ],
)
def test_bad_guarantees_are_refused_in_one_line(tmp_path, frameworks, message):
    path = write_inventory(tmp_path, TWO_HOSTS.replace("{FRAMEWORKS}", frameworks))
    with pytest.raises(UsageError) as caught:
        load_inventory(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_guarantees_of_undeclared_resources_wait_for_the_samples(tmp_path):
    text = (
        "all:\n  vars:\n    meso_frameworks: {web: {guarantee: {gpus: 4}}}\n  hosts:\n    a: {}\n"
    )
    inventory = load_inventory(write_inventory(tmp_path, text))
    assert inventory.frameworks[0].guarantee == {"gpus": 4}
