"""Scenario 1, pyinfra side: the idempotent equivalent of a no-op `swarm deploy --phase 2/3/4`.

Per node: ensure the release directory, sync the compose project `swarm render` produced
for the lab inventory (files.sync: compares each file's sha1 with the local one), read the
project's running containers as a fact (swarm's facts command reads `docker ps -a` too),
and run `docker compose up -d` only when the sync changed something or a service of the
project is not running.

BENCH_APPLY (default unset): swarm owns these containers on the lab, so the benchmark never
lets pyinfra apply; in every measured run the guard is false anyway (run.py checks that
no operation changed anything), so what is measured is pyinfra's no-op cost.
"""

import os

import yaml
from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

RENDER = os.path.join(os.environ["BENCH_RENDER_DIR"], host.name)
RELEASE = "/home/swarm/bench-pyinfra/release"
PROJECT = f"swarm-{host.name}"
APPLY = os.environ.get("BENCH_APPLY") == "1"

with open(os.path.join(RENDER, "compose.yml"), encoding="utf-8") as fh:
    EXPECTED = set(yaml.safe_load(fh)["services"])

files.directory(name="release directory", path=RELEASE, mode="755")
synced = files.sync(name="rendered compose project", src=RENDER, dest=RELEASE,
                    mode="644", dir_mode="755")

running = host.get_fact(
    Command,
    f"docker ps --all --filter label=com.docker.compose.project={PROJECT} --filter status=running "
    "--format '{{.Label \"com.docker.compose.service\"}}'",
)
missing = EXPECTED - set((running or "").split())

server.shell(
    name="docker compose up -d when something changed",
    commands=[f"docker compose -p {PROJECT} -f {RELEASE}/compose.yml up -d --remove-orphans"],
    _if=lambda: APPLY and (synced.did_change() or bool(missing)),
)
