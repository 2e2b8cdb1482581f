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
