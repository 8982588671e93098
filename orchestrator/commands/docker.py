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
    args = ["up", "-d"]  # never --remove-orphans: nothing is removed that was not named
    if wait:
        args.append("--wait")
        if wait_timeout is not None:
            args += ["--wait-timeout", str(wait_timeout)]
    if services:
        args += ["--", *services]
    return Command(_compose(project, file, *args), mutates=True, label="compose-up")


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
    return sh(script, name, subnet, mutates=True, label="network-create")


def docker_inspect(*names: str) -> Command:
    return read_only("docker", "inspect", "--", *names)


def image_inspect(*refs: str) -> Command:
    return read_only("docker", "image", "inspect", "--", *refs)


MISSING_IMAGE = "missing-image "

_PRESENT_OR_PULLED = (
    'rc=0; for ref in "$@"; do '
    'docker image inspect -- "$ref" >/dev/null 2>&1 && continue; '
    'docker pull --quiet -- "$ref" >/dev/null 2>&1 || { printf "missing-image %s\\n" "$ref"; rc=1; }; '
    'done; exit $rc'
)


def images_present(refs: Sequence[str]) -> Command:
    """Each image already on the node, else pulled now; one `missing-image <ref>` line for each that
    is neither (the registry down, the digest purged). A rollback asks before anything changes."""
    return sh(_PRESENT_OR_PULLED, *refs, mutates=True, label="images-present")


def parse_missing_images(stdout: str) -> list[str]:
    return [line.removeprefix(MISSING_IMAGE).strip() for line in stdout.splitlines() if line.startswith(MISSING_IMAGE)]


def docker_pull(ref: str, platform: str) -> Command:
    return mutating("docker", "pull", "--platform", platform, "--", ref)


def docker_version() -> Command:
    # '{{json .}}' works on every docker 20+; `--format json` only from 23.
    return read_only("docker", "version", "--format", "{{json .}}")


NETWORK_PRESENT = "swarm:network present"
NETWORK_MISSING = "swarm:network missing"

# $1 the network, $2 the format. A node whose containers are attached to the fleet network
# answers with ONE docker process: only when no container's `Networks` lists it is `docker
# network inspect` asked (~20 ms per node on the lab).
_PS_AND_NETWORK = (
    'out=$(docker ps --all --no-trunc --format "$2") || exit; '
    '[ -z "$out" ] || printf "%s\\n" "$out"; '
    'printf "%s\\n" "$out" | { while IFS= read -r l; do n=${l#*\\"Networks\\":\\"}; '
    '[ "$n" = "$l" ] && continue; n=${n%%\\"*}; case ",$n," in *",$1,"*) exit 0;; esac; done; exit 1; } '
    '&& exit 0; '
    'if docker network inspect -- "$1" >/dev/null 2>&1; '
    f'then echo "{NETWORK_PRESENT}"; else echo "{NETWORK_MISSING}"; fi'
)


def docker_ps_all(network: str | None = None) -> Command:
    """Every container on the engine, one JSON object per line; with `network`, also whether it
    exists when no container line names it (a NETWORK_PRESENT / NETWORK_MISSING line)."""
    if network is None:
        return Command(("docker", "ps", "--all", "--no-trunc", "--format", "{{json .}}"), mutates=False,
                       label="docker-ps")
    return sh(_PS_AND_NETWORK, network, "{{json .}}", mutates=False, label="docker-ps")


def compose_remove(project: str, file: str, services: Sequence[str]) -> Command:
    """Stop and remove these services' containers (volumes are kept)."""
    return Command(_compose(project, file, "rm", "--stop", "--force", "--", *services), mutates=True,
                   label="compose-rm")


# One line per container of a compose project, tab separated: what the health gate reads.
CONTAINER_FIELDS = ("service", "id", "status", "restarting", "restarts", "started", "exit_code",
                    "health", "created")
_CONTAINER_FORMAT = "\t".join((
    '{{index .Config.Labels "com.docker.compose.service"}}', "{{.Id}}", "{{.State.Status}}",
    "{{.State.Restarting}}", "{{.RestartCount}}", "{{.State.StartedAt}}", "{{.State.ExitCode}}",
    # `index` because docker formats a generic map here: `.State.Health` on a container
    # without a healthcheck is "map has no entry" (an error), `index` is empty
    '{{with (index .State "Health")}}{{.Status}}{{end}}', "{{.Created}}",
))
_STATES = ('ids=$(docker ps -aq --filter "label=com.docker.compose.project=$1") || exit; '
           '[ -n "$ids" ] || exit 0; exec docker inspect --format "$2" $ids')


def container_states(project: str) -> Command:
    """State, restart count, start time and health of every container of `project`."""
    return sh(_STATES, project, _CONTAINER_FORMAT, mutates=False, label="container-states")


def container_logs(container: str, lines: int = 20) -> Command:
    """The last lines a container wrote (stdout and stderr together)."""
    return sh('docker logs --tail "$2" -- "$1" 2>&1', container, str(lines), mutates=False,
              label="container-logs")
