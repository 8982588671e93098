"""`python -m orchestrator.cli`: the same as the `swarm` command."""

from orchestrator.cli.main import run

run()
