"""The node command's parsers against real output captured on lab hosts (tests/fixtures/node)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meso_agentless.node import NODE_COMMAND, nodecmd

FIXTURES = Path(__file__).parents[1] / "fixtures" / "node"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_meminfo_in_bytes():
    memory = nodecmd.parse_meminfo(fixture("meminfo-nspawn.txt"))
    assert memory["MemTotal"] == 24684084 * 1024
    assert memory["MemAvailable"] == 24154092 * 1024
    vm = nodecmd.parse_meminfo(fixture("meminfo-vm.txt"))
    assert 900 * 2**20 < vm["MemTotal"] < 1024 * 2**20  # a 1 GiB guest
    assert "HugePages_Total" in vm  # a count without a unit stays a count


@pytest.mark.parametrize(
    ("name", "mode"),
    [("mounts-nspawn-hybrid.txt", "hybrid"), ("mounts-vm-v2.txt", "v2")],
)
def test_cgroup_mode(name, mode):
    assert nodecmd.parse_cgroup_mode(fixture(name)) == mode
    assert nodecmd.parse_cgroup_mode("") == "v1"


def test_systemd_version():
    assert nodecmd.parse_systemd_version(fixture("systemctl-version.txt")) == 252
    assert nodecmd.parse_systemd_version("garbage") == 0


class VersionBus:
    """systemd's private bus answering the Manager's Version with `reply` (or raising it)."""

    broken = False

    def __init__(self, reply):
        self.reply = reply

    def call(self, member, signature, body, interface=None):
        assert (member, signature, body, interface) == (
            "Get", "ss", [nodecmd.SYSTEMD_MANAGER, "Version"], nodecmd.PROPERTIES)  # fmt: skip
        if isinstance(self.reply, Exception):
            raise self.reply
        return [self.reply]

    def close(self):
        self.broken = True


@pytest.mark.parametrize(
    ("reply", "version", "runs_systemctl"),
    [(("s", "252.39-1~deb12u2"), 252, False), (("s", "257"), 257, False),  # as 252 answers
     (ConnectionError("closed"), 252, True), (("u", 7), 252, True), (("s", "x"), 252, True)],
)  # fmt: skip
def test_systemds_version_is_asked_over_its_bus_and_of_systemctl_when_that_fails(
    monkeypatch, reply, version, runs_systemctl
):
    ran = []
    monkeypatch.setattr(nodecmd, "_run", lambda argv: ran.append(argv) or fixture(
        "systemctl-version.txt"))  # fmt: skip
    monkeypatch.setattr(nodecmd, "_SYSTEMD", [])
    bus = VersionBus(reply)
    assert nodecmd.systemd_version(bus) == version
    assert ran == ([["systemctl", "--version"]] if runs_systemctl else [])
    assert bus.broken == isinstance(reply, Exception)  # its session opens another
    assert nodecmd.systemd_version(VersionBus(("s", "300"))) == version  # read once


def test_a_pattern_matches_as_its_compiled_regular_expression_does():
    pattern = nodecmd.Pattern(r"^(\w+):[ ]+(\d+)$", re.MULTILINE)
    compiled = re.compile(pattern.pattern, pattern.flags)
    text = "MemTotal:  24684084\nbad line\nSwapFree: 0"
    assert pattern.findall(text) == compiled.findall(text)
    assert pattern.search("x") is None and pattern.fullmatch("A: 1").groups() == ("A", "1")
    assert "findall" in vars(pattern)  # kept: a later call goes straight to the compiled one
    with pytest.raises(AttributeError):
        pattern.no_such_method  # noqa: B018


def test_starting_the_node_command_imports_and_compiles_only_what_a_sample_needs():
    """Each new connection starts it: subprocess and calendar (6 ms on a lab host) are
    imported, and its regular expressions compiled, where they are used; typing (3 ms) is
    not imported at all."""
    probe = (
        "import re, sys\n"
        f"source = open({str(NODE_COMMAND)!r}).read()\n"
        "exec(compile(source, 'nodecmd', 'exec'), {'__name__': 'nodecmd'})\n"
        "print(sorted({'subprocess', 'calendar', 'typing'} & set(sys.modules)))\n"
        "re.purge(); re.compile = None\n"  # a pattern compiled now would fail
        "scope = {'__name__': 'nodecmd'}\n"
        "exec(compile(source, 'nodecmd', 'exec'), scope)\n"
        "print(bool(scope['UNIT_NAME'].pattern))\n"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.split("\n")[:2] == ["[]", "True"]


def test_units_and_their_limits():
    units = [nodecmd.unit_limits(p) for p in nodecmd.parse_show(fixture("show-units.txt"))]
    assert units == [
        {"unit": "meso-fixture-web-0-1.service", "active": "active", "sub": "running",
         "millicpus": 500, "memory_max": 256 * 2**20, "tasks_max": 64},
        {"unit": "meso-fixture-batch-0-1.service", "active": "active", "sub": "exited",
         "millicpus": 1500, "memory_max": None, "tasks_max": 28909},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "usec"),
    [("500ms", 500_000), ("1.500000s", 1_500_000), ("1min 30s", 90_000_000),
     ("infinity", None), ("", None), ("250us", 250),
     ("1.001000s", 1_001_000), ("2.009000s", 2_009_000)],  # exact, no float rounding down
)  # fmt: skip
def test_time_spans(text, usec):
    assert nodecmd.parse_usec(text) == usec


def test_sample_here_is_one_json_object():
    """The program runs as it would on a host: python3, stdlib only, one JSON line out."""
    done = subprocess.run([sys.executable, str(NODE_COMMAND), "sample"], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    facts = json.loads(done.stdout)
    assert facts["ok"] is True
    assert facts["cpus"] >= 1 and facts["mem_total"] > facts["mem_available"] > 0
    assert len(facts["boot_id"]) == 36 and len(facts["load"]) == 3
    bad = subprocess.run([sys.executable, str(NODE_COMMAND), "explode"], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 1
    assert json.loads(bad.stdout) == {
        "ok": False,
        "error": "verb: 'explode' is not one of "
        "['forget', 'health', 'launch', 'list', 'sample', 'status', 'stop', 'trigger']",
    }
