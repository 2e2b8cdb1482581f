"""The lab's pure parts: layout, subnet choice, per-host files, inventory, image recipes."""

import ipaddress

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from meso_agentless.errors import UsageError
from meso_agentless.lab.hostfiles import LAB_MARK_FILE, host_files
from meso_agentless.lab.images import Recipe
from meso_agentless.lab.inventory import render_inventory
from meso_agentless.lab.keys import known_hosts_line, new_keypair
from meso_agentless.lab.layout import LabLayout, choose_subnet, plan_lab

NET = ipaddress.IPv4Network("10.213.4.0/24")


def test_hosts_are_named_and_addressed_in_order():
    lab = plan_lab("lab", 3, NET, "nspawn", 2, 4096)
    assert [h.name for h in lab.hosts] == ["lab-1", "lab-2", "lab-3"]
    assert [h.address for h in lab.hosts] == ["10.213.4.11", "10.213.4.12", "10.213.4.13"]
    assert lab.gateway == "10.213.4.1"
    assert lab.bridge == "mb-lab"
    assert lab.hosts[0].netns == "meso-lab-1"


@given(name=st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), count=st.integers(1, 200))
def test_names_fit_linux_interfaces_and_nothing_repeats(name, count):
    lab = plan_lab(name, count, NET, "vm", 1, 1024)
    for field in ("name", "address", "netns", "veth", "mac"):
        values = [getattr(h, field) for h in lab.hosts]
        assert len(set(values)) == count, field
    assert all(len(h.veth) <= 15 for h in lab.hosts)
    assert len(lab.bridge) <= 15
    assert all(ipaddress.IPv4Address(h.address) in NET for h in lab.hosts)
    assert lab.gateway not in {h.address for h in lab.hosts}


@pytest.mark.parametrize("name", ["", "Lab", "1lab", "lab-x", "toolongname", "la b"])
def test_bad_lab_names_are_refused(name):
    with pytest.raises(UsageError, match="lab name"):
        plan_lab(name, 1, NET, "nspawn", 2, 4096)


def test_bad_sizes_are_refused():
    with pytest.raises(UsageError, match="--hosts"):
        plan_lab("lab", 0, NET, "nspawn", 2, 4096)
    with pytest.raises(UsageError, match="--mem"):
        plan_lab("lab", 1, NET, "nspawn", 2, 100)


def test_layout_round_trips_through_its_state_file_form():
    lab = plan_lab("lab", 2, NET, "nspawn", 2, 4096)
    assert LabLayout.from_dict(lab.to_dict()) == lab


def test_a_state_file_from_another_version_with_more_fields_still_reads():
    lab = plan_lab("lab", 2, NET, "nspawn", 2, 4096)
    data = lab.to_dict()
    data["sockets"] = 2  # a field a later version may add
    data["hosts"][0]["disk_mib"] = 512
    assert LabLayout.from_dict(data) == lab


def test_subnet_avoids_routes_and_other_labs():
    taken = [ipaddress.IPv4Network("10.213.0.0/24"), ipaddress.IPv4Network("10.213.1.0/25")]
    assert choose_subnet(taken) == ipaddress.IPv4Network("10.213.2.0/24")
    assert choose_subnet([]) == ipaddress.IPv4Network("10.213.0.0/24")
    with pytest.raises(UsageError, match="no free"):
        choose_subnet([ipaddress.IPv4Network("10.0.0.0/8")])


def test_each_host_gets_its_own_identity_files():
    lab = plan_lab("lab", 2, NET, "vm", 1, 1024)
    key = new_keypair("root@lab-1")
    files = host_files(
        lab,
        lab.hosts[0],
        machine_id="ab" * 16,
        host_key_private=key.private_openssh,
        host_key_public=key.public_openssh,
        authorized_key="ssh-ed25519 AAAA test",
    )
    by_path = {f.path: f for f in files}
    assert by_path["/etc/hostname"].content == b"lab-1\n"
    assert by_path[LAB_MARK_FILE].content == b"lab\n"
    assert by_path["/etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert b"10.213.4.12 lab-2" in by_path["/etc/hosts"].content
    network = by_path["/etc/systemd/network/10-meso-lab.network"].content.decode()
    assert "Address=10.213.4.11/24" in network and "Gateway=10.213.4.1" in network
    nspawn = plan_lab("lab", 2, NET, "nspawn", 2, 4096)
    nspawn_paths = {f.path for f in host_files(nspawn, nspawn.hosts[0], machine_id="0" * 32,
                                                 host_key_private=b"", host_key_public="k",
                                                 authorized_key="k")}  # fmt: skip
    assert "/etc/systemd/network/10-meso-lab.network" not in nspawn_paths


def test_inventory_lists_every_host_with_strict_host_key_checking(tmp_path):
    lab = plan_lab("lab", 3, NET, "nspawn", 2, 4096)
    text = render_inventory(lab, tmp_path / "key", tmp_path / "known_hosts")
    data = yaml.safe_load(text)
    hosts = data["all"]["children"]["meso_nodes"]["hosts"]
    assert {name: h["ansible_host"] for name, h in hosts.items()} == {
        "lab-1": "10.213.4.11",
        "lab-2": "10.213.4.12",
        "lab-3": "10.213.4.13",
    }
    assert hosts["lab-1"]["meso_resources"] == {"cpus": 2, "mem": "4096MiB"}
    args = data["all"]["vars"]["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in args


def test_known_hosts_line_names_host_and_address():
    key = new_keypair("root@lab-1")
    line = known_hosts_line(["lab-1", "10.213.4.11"], key.public_openssh)
    names, keytype, blob = line.split()
    assert names == "lab-1,10.213.4.11" and keytype == "ssh-ed25519"
    assert key.public_openssh.split()[1] == blob
    assert key.private_openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_image_cache_key_follows_what_goes_into_the_image():
    base = Recipe("bookworm", "http://deb.debian.org/debian", ("systemd",), kernel=False)
    same = Recipe("bookworm", "http://deb.debian.org/debian", ("systemd",), kernel=False)
    assert base.key == same.key
    assert base.key != Recipe("bookworm", base.mirror, ("systemd", "vim"), kernel=False).key
    assert base.key != Recipe("bookworm", base.mirror, ("systemd",), kernel=False, version=99).key
    assert Recipe("bookworm", base.mirror, ("systemd",), kernel=True).key.startswith("bookworm-vm-")


def test_numa_nodes_split_a_vms_cpus_and_memory_evenly():
    from meso_agentless.lab.cluster import numa_argv

    assert plan_lab("big", 1, NET, "vm", 4, 1536, numa=2).numa == 2
    assert numa_argv(4, 1536, 2) == [
        "-object", "memory-backend-ram,id=numa0,size=768M",
        "-numa", "node,nodeid=0,cpus=0-1,memdev=numa0",
        "-object", "memory-backend-ram,id=numa1,size=768M",
        "-numa", "node,nodeid=1,cpus=2-3,memdev=numa1",
    ]  # fmt: skip
    assert numa_argv(1, 1024, 1) == []
    for mode, cpus in (("nspawn", 4), ("vm", 3)):
        with pytest.raises(UsageError, match="--numa 2: VM hosts only"):
            plan_lab("big", 1, NET, mode, cpus, 1536, numa=2)
