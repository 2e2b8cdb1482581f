"""The Ansible side: ansible-lint (production profile), ansible-test sanity on the collection
meso.agentless, and the molecule scenarios on lab hosts.

Each scenario creates its own lab hosts, converges, checks idempotence (a second converge
changes nothing), verifies with testinfra (the node role; the whole site.yml, ending with
`meso run` as the unprivileged meso user; site.yml with the controller as a systemd service on a
lab host, installed from a wheelhouse, and `meso hosts` here through MESO_ADDR) and destroys them.
"""

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*argv: str, timeout: int = 900) -> str:
    done = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip
    output = ANSI.sub("", done.stdout + done.stderr)
    assert done.returncode == 0, output[-6000:]
    return output


def test_ansible_lint_production_profile_passes():
    output = run("ansible-lint")
    assert "Profile 'production' was required, and it passed" in output


def test_ansible_test_sanity_passes_for_the_collection():
    output = run("scripts/collection-sanity")
    assert 'Running sanity test "validate-modules"' in output
    assert 'Running sanity test "pylint"' in output
    assert "ERROR" not in output and "FATAL" not in output


@pytest.mark.parametrize(("scenario", "tests"), [("node", 21), ("default", 23), ("controller", 10)])
def test_molecule_scenario(scenario, tests):
    output = run("molecule", "test", "-s", scenario)
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert f"{scenario} ➜ {step}: Executed: Successful" in output
    assert re.search(rf"\b{tests} passed\b", output), output[-4000:]
    assert "skipped" not in output.split("verify: Executing")[1].split("Verifier completed")[0]
