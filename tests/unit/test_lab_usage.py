"""What a lab host costs: memory read from smaps_rollup, processes found under the host's own."""

from meso_agentless.lab.usage import (
    cpu_split,
    descendants,
    disk_usage,
    smaps_totals,
    stat_cpu_ticks,
)

ROLLUP = """\
55dc4dbc5000-7ffc8f995000 ---p 00000000 00:00 0                          [rollup]
Rss:                1760 kB
Pss:                 212 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Shared_Clean:       1608 kB
"""


def test_rss_and_pss_are_read_in_bytes_and_their_kin_left_alone():
    assert smaps_totals(ROLLUP) == (1760 * 1024, 212 * 1024)
    assert smaps_totals("") == (0, 0)  # a kernel thread's, or a process that ended


def test_a_host_is_its_process_and_everything_under_it_but_nothing_beside():
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 13: 11, 14: 12, 20: 1, 21: 20}
    assert descendants(10, parents) == {10, 11, 12, 13, 14}
    assert descendants(21, parents) == {21}
    assert descendants(99, parents) == {99}  # gone: only itself, which counts nothing


def test_disk_counts_files_under_a_directory_or_a_single_file(tmp_path):
    (tmp_path / "upper" / "etc").mkdir(parents=True)
    (tmp_path / "upper" / "etc" / "hostname").write_bytes(b"x" * 10_000)
    (tmp_path / "disk.img").write_bytes(b"y" * 5000)
    assert disk_usage(tmp_path / "upper") >= 10_000
    assert disk_usage(tmp_path / "disk.img") >= 5000
    assert disk_usage(tmp_path / "nothing") == 0


def test_cpu_counts_own_and_reaped_childrens_ticks_past_a_name_with_spaces():
    stat = ("4242 (python3 -m (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 "
            "150 30 7 3 20 0 1 0 99 0 0")  # fmt: skip
    assert stat_cpu_ticks(stat) == 150 + 30 + 7 + 3


def test_cpu_between_two_readings_is_split_by_command_and_reaped_children():
    before = {(1, "systemd (PID 1)"): (1.0, 2.0), (50, "python3"): (0.5, 0.1), (60, "sshd"): (1, 0)}
    after = {(1, "systemd (PID 1)"): (1.5, 2.75), (50, "python3"): (0.75, 0.1),
             (70, "python3"): (0.125, 0.0)}  # fmt: skip
    assert cpu_split(before, after) == {
        "systemd (PID 1) children": 0.75,  # its tasks
        "systemd (PID 1)": 0.5,
        "python3": 0.375,  # both, one new (sshd ended: not counted)
    }
