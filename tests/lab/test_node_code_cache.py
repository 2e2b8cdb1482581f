"""The streamed node command's compiled code, cached on the host (meso_agentless/node/bootstrap.py):
what runs is always the source sent, an entry another user wrote or others may write is never
used, and a damaged entry costs only a compile."""

import base64
import hashlib
import json
import shlex

import pytest

from meso_agentless.hosts import ssh
from meso_agentless.hosts.transport import BOOTSTRAP, NodeConnection
from meso_agentless.inventory import load_inventory
from meso_agentless.node import bootstrap, node_command_source
from tests.conftest import LAB

pytestmark = pytest.mark.lab

HOST = f"{LAB}-1"
CACHE = bootstrap.CACHE
SOURCE = b"print('sent')\n"


def stream(meso_lab, source: bytes) -> str:
    """What `source` prints, streamed to python3 through the bootstrap as the controller does."""
    done = ssh.run_argv(meso_lab.connect(HOST), ["python3", "-c", BOOTSTRAP], timeout=30,
                        stdin=f"{len(source)}\n".encode() + source)  # fmt: skip
    assert done.ok, done.stderr
    return done.stdout.strip()


def on_host(meso_lab, code: str) -> str:
    """Run `code` on the host with the bootstrap's functions at hand (as root)."""
    program = f"scope = {{'__name__': 'bootstrap'}}\nexec({BOOTSTRAP!r}, scope)\n{code}"
    done = meso_lab.run(HOST, ["python3", "-c", program])
    assert done.ok, done.stderr
    return done.stdout.strip()


def plant(meso_lab, source: bytes, owner: int = 0, mode: int = 0o600) -> str:
    """An intact entry under `source`'s name whose code prints 'planted'; its path."""
    planting = f"""
import os
name = scope['key']({source!r})
path = os.path.join({CACHE!r}, name)
os.makedirs({CACHE!r}, mode=0o700, exist_ok=True)
with open(path, 'wb') as f:
    f.write(scope['entry'](name, compile("print('planted')", 'nodecmd', 'exec')))
os.chown(path, {owner}, {owner})
os.chmod(path, {mode})
print(path)
"""
    return on_host(meso_lab, planting)


def test_an_intact_entry_runs_and_another_source_never_does(meso_lab):
    plant(meso_lab, SOURCE)
    assert stream(meso_lab, SOURCE) == "planted"  # the cache is really what runs
    assert stream(meso_lab, b"print('changed')\n") == "changed"
    listed = meso_lab.run(HOST, ["ls", CACHE]).stdout.split()
    assert listed == [on_host(meso_lab, "print(scope['key'](b\"print('changed')\\n\"))")]


@pytest.mark.parametrize(("owner", "mode"), [(65534, 0o600), (0, 0o644), (0, 0o666)])
def test_an_entry_of_another_user_or_open_to_others_is_not_run(meso_lab, owner, mode):
    path = plant(meso_lab, SOURCE, owner, mode)
    assert stream(meso_lab, SOURCE) == "sent"
    shown = meso_lab.run(HOST, ["stat", "-c", "%u %a", path]).stdout.split()
    assert shown == ["0", "600"]  # replaced by the host's own compile


def test_a_cache_directory_others_may_enter_is_not_used(meso_lab):
    plant(meso_lab, SOURCE)
    meso_lab.run(HOST, ["chmod", "755", CACHE])
    try:
        assert stream(meso_lab, SOURCE) == "sent"
    finally:
        meso_lab.run(HOST, ["chmod", "700", CACHE])


@pytest.mark.parametrize("damage", ["truncate -s 1000", "truncate -s 0", "corrupt"])
def test_the_node_command_starts_over_a_damaged_entry(meso_lab, damage):
    """Fault: the real node command's entry cut short or corrupted: it starts (compiled), and
    the entry is written again, intact."""
    node = {n.name: n for n in load_inventory(str(meso_lab.inventory)).nodes}[HOST]
    warm = NodeConnection(node, timeout=30)
    try:
        assert warm.request("sample")["boot"]
    finally:
        warm.close()
    digest = hashlib.sha256(node_command_source()).hexdigest()
    names = [n for n in meso_lab.run(HOST, ["ls", CACHE]).stdout.split() if n.startswith(digest)]
    assert len(names) == 1, names
    path = f"{CACHE}/{names[0]}"
    if damage == "corrupt":
        meso_lab.run(HOST, ["sh", "-c", f"printf 'XXXX' | dd of={shlex.quote(path)} bs=1 seek=5000 "
                                        "conv=notrunc status=none"])  # fmt: skip
    else:
        meso_lab.run(HOST, [*damage.split(), path])
    connection = NodeConnection(node, timeout=30)
    try:
        assert connection.request("sample")["boot"]
        assert json.dumps(connection.request("policy")["policy"])
    finally:
        connection.close()
    data = base64.b64decode(meso_lab.run(HOST, ["base64", "-w0", path]).stdout)
    name = path.rsplit("/", 1)[-1].encode()
    assert hashlib.sha256(name + data[32:]).digest() == data[:32]  # written again, intact
