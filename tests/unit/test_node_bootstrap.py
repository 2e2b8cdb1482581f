"""The streamed node command's compiled-code cache: used only when it is this user's own and
intact, and never for another source (tests/lab/test_node_code_cache.py runs it on hosts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meso_agentless.node import bootstrap, bootstrap_source

SOURCE = b"result = 'compiled'\n"
PLANTED = compile("result = 'planted'\n", "nodecmd", "exec")


def run(code) -> str:
    scope: dict = {}
    exec(code, scope)  # noqa: S102
    return scope["result"]


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "meso-node" / "code"
    return str(path)


def plant(cache: str, source: bytes = SOURCE, mode: int = 0o600) -> str:
    """A valid entry for `source` whose code is PLANTED; its path."""
    os.makedirs(cache, mode=0o700, exist_ok=True)
    path = os.path.join(cache, bootstrap.key(source))
    with open(path, "wb") as f:
        f.write(bootstrap.entry(bootstrap.key(source), PLANTED))
    os.chmod(path, mode)
    return path


def test_the_first_start_compiles_and_keeps_the_code_owner_only(cache):
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"
    path = os.path.join(cache, bootstrap.key(SOURCE))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(cache)).st_mode & 0o777 == 0o700
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"  # from the entry now


def test_an_intact_entry_of_this_user_is_what_runs(cache):
    plant(cache)
    assert run(bootstrap.load(SOURCE, cache)) == "planted"  # so the cache is really read


def test_another_source_never_runs_from_an_entry_made_for_the_first(cache):
    plant(cache)
    changed = SOURCE + b"# changed\n"
    assert run(bootstrap.load(changed, cache)) == "compiled"
    assert os.listdir(cache) == [bootstrap.key(changed)]  # the older source's entry is gone


def test_an_entry_renamed_to_another_sources_name_is_refused(cache):
    path = plant(cache, source=b"other = 1\n")
    os.rename(path, os.path.join(cache, bootstrap.key(SOURCE)))
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty", "header only"])
def test_a_damaged_entry_is_compiled_anew_and_replaced(cache, damage):
    path = plant(cache)
    data = Path(path).read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "header only": data[:32],
               "corrupted": data[:100] + bytes([data[100] ^ 1]) + data[101:]}[damage]  # fmt: skip
    with open(path, "wb") as f:
        f.write(damaged)
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"  # rewritten, intact
    assert Path(path).read_bytes() != damaged


@pytest.mark.skipif(os.geteuid() != 0, reason="making files of another user needs root")
def test_an_entry_of_another_user_is_ignored(cache):
    path = plant(cache)
    os.chown(path, 65534, 65534)
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"
    assert os.stat(path).st_uid == os.geteuid()  # replaced by this user's own


@pytest.mark.skipif(os.geteuid() != 0, reason="making files of another user needs root")
def test_a_directory_of_another_user_is_neither_read_nor_written(cache):
    path = plant(cache)
    os.chown(cache, 65534, 65534)
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"
    assert bootstrap.entry(bootstrap.key(SOURCE), PLANTED) == Path(path).read_bytes()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o620])
def test_an_entry_others_may_read_or_write_is_ignored(cache, mode):
    plant(cache, mode=mode)
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"


def test_a_directory_others_may_enter_is_ignored(cache):
    plant(cache)
    os.chmod(cache, 0o755)  # noqa: S103 - what is tested
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"


def test_a_symlinked_entry_is_not_followed(cache, tmp_path):
    path = plant(cache)
    os.rename(path, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", path)
    assert run(bootstrap.load(SOURCE, cache)) == "compiled"


def test_no_cache_where_it_cannot_be_written(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert run(bootstrap.load(SOURCE, str(blocked / "code"))) == "compiled"


def test_the_bootstrap_runs_a_streamed_program_with_its_arguments_and_input(cache):
    program = b"import sys; print(sys.argv, repr(__nodecmd_source__[:6]), sys.stdin.read())"
    text = bootstrap_source().replace(repr(bootstrap.CACHE).replace("'", '"'), repr(cache))
    assert repr(cache) in text  # not this machine's own /run
    done = subprocess.run(
        [sys.executable, "-c", text, "serve", "x"],
        input=f"{len(program)}\n".encode() + program + b"the rest",
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.decode().strip() == "['nodecmd', 'serve', 'x'] b'import' the rest"
    assert os.listdir(cache) == [bootstrap.key(program)]
