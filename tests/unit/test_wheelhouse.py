"""The meso_controller role's wheelhouse builder: what a build's key sees, and the cache."""

import importlib.util
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROLE = Path(__file__).parents[2] / "collections/ansible_collections/meso/agentless/roles"
SCRIPT = ROLE / "meso_controller/files/wheelhouse.py"
_spec = importlib.util.spec_from_file_location("wheelhouse", SCRIPT)
assert _spec and _spec.loader
wheelhouse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheelhouse)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root, {"pyproject.toml": "[project]\nname = 'p'\n", "p/__init__.py": "x = 1\n"})
    return root


def test_a_project_is_its_files_without_caches_builds_or_hidden_ones(project):
    write(project, {".venv/bin/python": "", "p/__pycache__/a.pyc": "", "build/lib/p/old.py": "",
                    "dist/p.whl": "", "p.egg-info/PKG-INFO": "", ".ansible/tmp": "",
                    "p/build/real.py": "kept: only the top-level build/ is skipped"})  # fmt: skip
    assert wheelhouse.project_files(project) == [
        "p/__init__.py", "p/build/real.py", "pyproject.toml"
    ]  # fmt: skip


def test_a_symlink_counts_by_its_target_and_is_never_followed(project, tmp_path):
    outside = tmp_path / "lab-inventory.yml"
    (project / "inventory.yml").symlink_to(outside)  # dangling, like a lab that is down
    (project / "templates").symlink_to("p")  # a directory
    names = wheelhouse.project_files(project)
    assert {"inventory.yml", "templates"} <= set(names)
    before = wheelhouse.build_key(str(project), [])
    outside.write_text("a lab came up")
    assert wheelhouse.build_key(str(project), []) == before


def test_the_key_changes_with_a_file_of_the_package_and_only_then(project):
    key = wheelhouse.build_key(str(project), [])
    assert wheelhouse.build_key(str(project), []) == key
    write(project, {"p/__pycache__/x.pyc": "junk", ".cache/y": "junk"})
    assert wheelhouse.build_key(str(project), []) == key
    write(project, {"p/__init__.py": "x = 2\n"})
    assert wheelhouse.build_key(str(project), []) != key
    assert wheelhouse.build_key(str(project), ["--pre"]) != wheelhouse.build_key(str(project), [])


def test_in_a_git_work_tree_ignored_files_do_not_count(project):
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    write(project, {".gitignore": "*.log\n"})
    key = wheelhouse.build_key(str(project), [])
    write(project, {"debug.log": "noise"})
    assert "debug.log" not in wheelhouse.project_files(project)
    assert wheelhouse.build_key(str(project), []) == key
    write(project, {"p/new.py": "untracked but not ignored: it goes into the wheel"})
    assert wheelhouse.build_key(str(project), []) != key


def test_a_requirement_is_its_text(tmp_path):
    assert wheelhouse.source_of("meso-agentless==0.1.0") == {"requirement": "meso-agentless==0.1.0"}
    key = wheelhouse.build_key("meso-agentless==0.1.0", [])
    assert wheelhouse.build_key("meso-agentless==0.2.0", []) != key


def make_wheel(directory: Path, body: str) -> Path:
    """A minimal valid wheel of a package with no dependencies."""
    path = directory / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("tiny.py", body)
        wheel.writestr(
            "tiny-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n"
        )
        wheel.writestr(
            "tiny-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr("tiny-1.0.dist-info/RECORD", "")
    return path


def build(package: Path, cache: Path, *extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--package", str(package), "--cache", str(cache),
         "--keep", "2", *extra, "--", "--no-index", "--no-deps"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return json.loads(done.stdout)  # stdout is the JSON alone; pip talks on stderr


def test_a_build_is_cached_and_made_again_only_when_the_package_changes(tmp_path):
    source, cache = tmp_path / "src", tmp_path / "cache"
    source.mkdir()
    wheel = make_wheel(source, "v = 1\n")
    first = build(wheel, cache)
    assert first["changed"] is True
    assert first["wheels"] == ["tiny-1.0-py3-none-any.whl"]
    assert first["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert Path(first["dir"]) == cache / first["key"]
    with tarfile.open(first["archive"]) as tar:  # the same wheels, in one file to send
        assert [(m.name, m.mtime, m.uid) for m in tar] == [(first["wheels"][0], 0, 0)]
        assert tar.extractfile(first["wheels"][0]).read() == wheel.read_bytes()
    again = build(wheel, cache)
    assert (again["changed"], again["key"]) == (False, first["key"])
    assert build(wheel, cache, "--force")["changed"] is True

    make_wheel(source, "v = 2\n")
    second = build(wheel, cache)
    assert second["changed"] is True and second["key"] != first["key"]
    make_wheel(source, "v = 3\n")
    third = build(wheel, cache)
    # --keep 2: the oldest build is pruned, the current one never
    kept = {p.name for p in cache.iterdir() if not p.name.startswith(".")}
    assert kept == {second["key"], third["key"]}


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path):
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--package", "no-such-package-xyz", "--cache", str(cache),
         "--", "--no-index"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "pip wheel no-such-package-xyz failed" in done.stderr
    assert done.stdout == ""
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []
