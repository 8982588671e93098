"""docker and docker compose invocations."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orchestrator.commands.base import Argv, Command, mutating, read_only, sh


def _compose(project: str, file: str, *args: str) -> Argv:
    return ("docker", "compose", "-p", project, "-f", file, *args)


def compose_up(
    project: str,
    file: str,
    services: Sequence[str] = (),
    *,
    wait: bool = False,
    wait_timeout: int | None = None,
) -> Command:
    args = ["up", "-d", "--remove-orphans"]
    if wait:
        args.append("--wait")
        if wait_timeout is not None:
            args += ["--wait-timeout", str(wait_timeout)]
    if services:
        args += ["--", *services]
    return Command(_compose(project, file, *args), mutates=True)


def compose_ps(project: str, file: str) -> Command:
    return Command(_compose(project, file, "ps", "--all", "--format", "json"), mutates=False)


def parse_compose_ps(stdout: str) -> list[dict[str, object]]:
    """compose v2 prints either one JSON array or one JSON object per line."""
    text = stdout.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def compose_config_hash(project: str, file: str) -> Command:
    return Command(_compose(project, file, "config", "--hash", "*"), mutates=False)


def parse_config_hash(stdout: str) -> dict[str, str]:
    """`service hash` lines -> {service: hash}."""
    pairs = (line.split() for line in stdout.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def network_create(name: str, subnet: str) -> Command:
    """Create the fleet's docker network unless it exists already."""
    script = (
        'docker network inspect -- "$1" >/dev/null 2>&1 || '
        'docker network create --subnet "$2" -- "$1"'
    )
    return sh(script, name, subnet, mutates=True)


def docker_inspect(*names: str) -> Command:
    return read_only("docker", "inspect", "--", *names)


def image_inspect(*refs: str) -> Command:
    return read_only("docker", "image", "inspect", "--", *refs)


def docker_pull(ref: str, platform: str) -> Command:
    return mutating("docker", "pull", "--platform", platform, "--", ref)


def docker_version() -> Command:
    # '{{json .}}' works on every docker 20+; `--format json` only from 23.
    return read_only("docker", "version", "--format", "{{json .}}")


def docker_ps_all() -> Command:
    """Every container on the engine, one JSON object per line."""
    return read_only("docker", "ps", "--all", "--no-trunc", "--format", "{{json .}}")


def compose_remove(project: str, file: str, services: Sequence[str]) -> Command:
    """Stop and remove these services' containers (volumes are kept)."""
    return Command(_compose(project, file, "rm", "--stop", "--force", "--", *services), mutates=True)
