"""Plain YAML inventories read without ansible-core give what ansible-core gives."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meso_agentless import inventory, inventory_yaml
from meso_agentless.inventory import NODE_GROUP, load_inventory

CONNECTION = {"ansible_host", "ansible_user", "ansible_port", "ansible_ssh_private_key_file"}
LAB = """
all:
  vars:
    ansible_user: root
    meso_known_hosts_file: /tmp/known_hosts
    meso_frameworks: {etl: {weight: 2}}
  children:
    meso_nodes:
      vars: {meso_attributes: {rack: r1}}
      hosts:
        n-1: {ansible_host: 10.0.0.11, meso_resources: {cpus: 2, mem: 4096MiB}}
        n-2:
          ansible_host: 10.0.0.12
      children:
        big:
          vars: {meso_attributes: {rack: r2, size: big}, ansible_user: ops}
          hosts:
            n-2: {meso_reserved: {cpus: 1}}
            n-3: {ansible_host: 10.0.0.13, ansible_port: 2222}
    other:
      hosts:
        outside: {ansible_host: 10.0.0.99}
"""


def read_both(monkeypatch, path):
    fast = inventory_yaml.plain_hostvars(str(path), NODE_GROUP)
    assert fast is not None, "the plain case was declined"
    by_ansible = inventory._ansible_hostvars(str(path))
    with monkeypatch.context() as m:
        m.setattr(inventory, "plain_hostvars", lambda *_: None)
        slow = load_inventory(str(path))
    return fast, by_ansible, slow


def assert_same(monkeypatch, path):
    fast, by_ansible, slow = read_both(monkeypatch, path)
    assert sorted(fast) == sorted(by_ansible)
    for host, values in fast.items():  # ansible-core adds its magic variables besides
        assert {k: by_ansible[host].get(k, "(missing)") for k in values} == values
        read = {k for k in by_ansible[host] if k.startswith("meso_") or k in CONNECTION}
        assert read <= set(values)
    assert load_inventory(str(path)) == slow


def test_the_lab_shape_reads_the_same(monkeypatch, tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text(LAB)
    assert_same(monkeypatch, path)
    nodes = {n.name: n for n in load_inventory(str(path)).nodes}
    assert sorted(nodes) == ["n-1", "n-2", "n-3"]  # meso_nodes and its children only
    assert (nodes["n-2"].user, nodes["n-3"].port, nodes["n-1"].user) == ("ops", 2222, "root")
    assert nodes["n-2"].attributes == {"rack": "r2", "size": "big"}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ini", "[meso_nodes]\na ansible_host=1.2.3.4\n"),
        ("ranges", "all:\n  hosts:\n    n[1:3]: {}\n"),
        ("ports", "all:\n  hosts:\n    n:2222: {}\n"),
        ("plugin", "plugin: constructed\n"),
        ("priority", "all:\n  children:\n    g:\n      vars: {ansible_group_priority: 3}\n"),
        ("string section", "all:\n  hosts: a\n"),
        ("unknown key", "all:\n  host: {a: {}}\n"),
        ("tags", "all:\n  vars: {x: !unsafe '{{ y }}'}\n  hosts: {a: {}}\n"),
    ],
)
def test_anything_but_the_plain_case_is_left_to_ansible(tmp_path, name, text):
    path = tmp_path / ("inventory.ini" if name == "ini" else "inventory.yml")
    path.write_text(text)
    assert inventory_yaml.plain_hostvars(str(path), NODE_GROUP) is None


def test_group_vars_beside_it_or_ansible_settings_leave_it_to_ansible(monkeypatch, tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text(LAB)
    (tmp_path / "group_vars").mkdir()
    assert inventory_yaml.plain_hostvars(str(path), NODE_GROUP) is None
    (tmp_path / "group_vars").rmdir()
    monkeypatch.setenv("ANSIBLE_HASH_BEHAVIOUR", "merge")
    assert inventory_yaml.plain_hostvars(str(path), NODE_GROUP) is None


NAMES = st.sampled_from(["a", "b", "c", "d", "meso_nodes"])
HOSTS = st.sampled_from(["h1", "h2", "h3"])
VARS = st.dictionaries(
    st.sampled_from(["x", "y", "meso_attributes", "ansible_user"]),
    st.sampled_from([1, "s", None, True, [1, 2], {"k": "v"}]),
    max_size=3,
)


@st.composite
def groups(draw, depth=0):
    body = {}
    if draw(st.booleans()):
        body["vars"] = draw(VARS)
    if draw(st.booleans()):
        body["hosts"] = draw(st.dictionaries(HOSTS, st.one_of(st.none(), VARS), max_size=3))
    if depth < 3 and draw(st.booleans()):
        body["children"] = draw(st.dictionaries(NAMES, groups(depth + 1), max_size=2))
    return body


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=st.dictionaries(st.sampled_from(["all", "a", "b", "meso_nodes"]), groups(),
                            min_size=1, max_size=3))  # fmt: skip
def test_random_group_trees_read_the_same(monkeypatch, tmp_path, tree):
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    fast = inventory_yaml.plain_hostvars(str(path), NODE_GROUP)
    try:
        by_ansible = inventory._ansible_hostvars(str(path))
    except Exception:  # a tree ansible-core refuses (a cycle): it must not be read here either
        assert fast is None or not fast
        return
    if fast is None:
        return
    assert sorted(fast) == sorted(by_ansible)
    for host, values in fast.items():
        assert {k: by_ansible[host].get(k, "(missing)") for k in values} == inventory._plain(values)
