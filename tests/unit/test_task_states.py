"""One task state from node to store to API: the node command's stdlib copy of the rules is
the package's."""

from meso_agentless.core import tasks
from meso_agentless.node import nodecmd


def test_the_node_commands_copy_of_the_state_sets_is_the_packages():
    assert {s.value for s in tasks.HOLDS_RESOURCES} == nodecmd.HOLDS_RESOURCES
    assert {s.value for s in tasks.ENDED_ON_NODE} == nodecmd.ENDED


def test_every_state_the_node_reports_is_a_task_state():
    reported = nodecmd.HOLDS_RESOURCES | nodecmd.ENDED | {"unknown"}
    assert reported <= {s.value for s in tasks.TaskState}
    assert tasks.WATCHED | {tasks.TaskState.MISSING} == tasks.TRACKED
    assert not tasks.ENDED & tasks.TRACKED


def test_a_host_shutting_down_makes_what_it_stopped_gone_and_keeps_what_runs_or_finished():
    from meso_agentless.core.health import HostState

    S, stopping = tasks.TaskState, HostState.STOPPING
    running, finished = tasks.TaskStatus(S.RUNNING), tasks.TaskStatus(S.FINISHED, exit_code=0)
    killed = tasks.TaskStatus(S.KILLED, signal=15)
    assert tasks.judge(S.RUNNING, stopping, None, rebooted=False) == tasks.TaskStatus(S.GONE)
    assert tasks.judge(S.RUNNING, stopping, killed, rebooted=False) == tasks.TaskStatus(S.GONE)
    assert tasks.judge(S.RUNNING, stopping, running, rebooted=False) == running
    assert tasks.judge(S.RUNNING, stopping, finished, rebooted=False) == finished
    assert tasks.judge(S.FINISHED, stopping, None, rebooted=False) is None
    # the same report from a host that is up: a unit that vanished was lost
    assert tasks.judge(S.RUNNING, HostState.UP, None, rebooted=False) == tasks.TaskStatus(S.LOST)
