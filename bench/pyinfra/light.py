"""Scenario 2, pyinfra side: ensure one directory on each light node (what swarm's
infrastructure phase with `directories: [releases]` does)."""

from pyinfra.operations import files

files.directory(name="deploy_root/releases", path="/opt/ai-swarm/releases", mode="755")
