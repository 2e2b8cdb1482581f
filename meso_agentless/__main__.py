"""`python -m meso_agentless` is the `meso` command."""

from meso_agentless.cli import main

main()
