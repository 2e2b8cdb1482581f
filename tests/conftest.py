import os

pytest_plugins = ["meso_agentless.testing.pytest_plugin"]

# Lab names of the session's fixtures (see meso_agentless.testing.pytest_plugin).
LAB = os.environ.get("MESO_TEST_LAB", "mtest")
VM_LAB = os.environ.get("MESO_TEST_VM_LAB", "mvm")
REL_LAB = os.environ.get("MESO_TEST_REL_LAB", "mrel")  # tests/reliability: five hosts
