pytest_plugins = ["meso_agentless.testing.pytest_plugin"]
