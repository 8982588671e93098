"""swarm: an agentless fleet orchestrator for home GPU swarms."""

__version__ = "0.1.0"
