"""Issue 11's reliability suite, one test per scenario, on a 5-host lab; fewer repetitions
than bench/reliability_bench.py, which runs the same scenarios with the full counts.

Each scenario is in meso_agentless.testing.reliability; its checks are the issue's pass column,
and a failure message carries the figures and the evidence (states, controller log lines)."""

import pytest

from meso_agentless.testing import reliability as rel

pytestmark = [pytest.mark.lab, pytest.mark.reliability]


def test_sigkill_the_controller_and_meso_run_mid_launch_loses_and_duplicates_nothing(
    rel_lab, tmp_path, record, seed
):
    result = record(
        rel.sigkill_mid_launch(rel_lab, tmp_path, points=4, embedded_points=2, seed=seed)
    )
    assert result.passed, result.report()


def test_ssh_connections_reset_during_launches_leave_exactly_one_unit_per_instance(
    rel_lab, tmp_path, record, seed
):
    result = record(rel.ssh_resets(rel_lab, tmp_path, launches=150, resets=15, seed=seed))
    assert result.passed, result.report()


def test_one_host_cut_off_is_unreachable_in_5_s_replaced_after_replace_after_and_healed_clean(
    rel_lab, tmp_path, record, seed
):
    result = record(rel.cut_one_host(rel_lab, tmp_path, probes=2, replace_after=15, seed=seed))
    assert result.passed, result.report()


def test_one_host_cut_before_a_run_costs_its_deadline_once(rel_lab, tmp_path, record):
    result = record(rel.cut_before_run(rel_lab, tmp_path, run_timeout=30))
    assert result.passed, result.report()


def test_the_controller_cut_from_3_of_5_hosts_replaces_nothing_and_resumes(
    rel_lab, tmp_path, record
):
    result = record(rel.controller_partitioned(rel_lab, tmp_path, replace_after=15))
    assert result.passed, result.report()


def test_a_rebooted_host_has_its_tasks_gone_retried_per_policy_and_replaced(
    rel_lab, tmp_path, record
):
    result = record(rel.reboot_host(rel_lab, tmp_path))
    assert result.passed, result.report()


def test_readers_looping_during_runs_never_run_a_task_twice_or_mark_a_finished_one_lost(
    rel_lab, tmp_path, record
):
    result = record(rel.readers_during_runs(rel_lab, tmp_path, runs=2, tasks=40))
    assert result.passed, result.report()


def test_a_health_check_restarts_only_as_specified_and_a_drain_keeps_the_service_up(
    rel_lab, tmp_path, record
):
    result = record(rel.health_and_drain(rel_lab, tmp_path))
    assert result.passed, result.report()
