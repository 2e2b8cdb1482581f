"""The lab raises the kernel limits its containers need, never lowers them, and says in one
line what to run when it cannot."""

import pytest

from meso_agentless.lab.system import LabError, ensure_kernel_limits


def tree(tmp_path, values):
    for key, value in values.items():
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return tmp_path


def test_low_limits_are_raised_and_high_ones_kept(tmp_path):
    root = tree(tmp_path, {"fs/inotify/max_user_instances": 128,
                           "fs/inotify/max_user_watches": 10_000_000})  # fmt: skip
    said = []
    ensure_kernel_limits(said.append, root)
    assert (root / "fs/inotify/max_user_instances").read_text() == "8192\n"
    assert (root / "fs/inotify/max_user_watches").read_text() == "10000000\n"
    assert said == ["raised fs.inotify.max_user_instances from 128 to 8192"]
    ensure_kernel_limits(said.append, root)
    assert len(said) == 1


def test_a_limit_it_cannot_change_is_named_with_the_command_to_run(tmp_path):
    (tmp_path / "fs/inotify/max_user_instances").mkdir(parents=True)  # read-only /proc/sys, say
    with pytest.raises(LabError) as caught:
        ensure_kernel_limits(lambda _m: None, tmp_path)
    message = str(caught.value)
    assert "sysctl -w fs.inotify.max_user_instances=8192" in message and "\n" not in message


def test_a_broken_state_file_of_a_lab_is_one_line_naming_it_and_what_to_run(tmp_path, monkeypatch):
    from meso_agentless.lab import cluster

    monkeypatch.setenv("MESO_LAB_ROOT", str(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "lab.json").write_text('{"name": "other", "mode": "nspa')  # cut short
    assert cluster.load("absent") is None
    with pytest.raises(LabError) as caught:
        cluster.load("other")
    message = str(caught.value)
    assert "lab 'other'" in message and "meso lab down --lab other" in message
    assert "\n" not in message
