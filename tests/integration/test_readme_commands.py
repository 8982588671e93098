"""The first hour of a new operator, on the deployed lab: every command the README shows and every
command and URL `make demo` ends with, run exactly as written, from the project's root, through
the `swarm` command a user types (the console script, not `python -m`: that is how the verify
run once loaded this repository's own tests/conftest.py). Each must give its documented exit code,
and nothing unexpected may reach stderr (no warning, no traceback, no error line).

Left out, on purpose: `make test` / `make examples` (the suite itself), `make demo`'s setup step
(scripts/setup.sh installs packages; the script it then runs, scripts/demo.sh, is run here) and
`swarm lab down` (the lab is shared by the session; tests/integration/test_lab.py tears labs down).
The README's lab paths are `~/.cache/swarm-lab/...`; when the session's lab lives elsewhere
($SWARM_LAB_DIR), that prefix is replaced by the lab's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.labtools import REPO

pytestmark = pytest.mark.lab

README = (REPO / "README.md").read_text()
README_LAB = "~/.cache/swarm-lab"
# Lines on stderr that no command of the README should print when it does what it says: a Python
# warning (`...: CryptographyDeprecationWarning: ...`), a traceback, an error. (A deploy's own
# progress goes to stderr too, and may say "preflight: 23 passed, 1 warning(s)": that is swarm's.)
UNEXPECTED = re.compile(r"\w+Warning\b|Traceback \(most recent call last\)|^\s*error:|internal error")


# ---------------------------------------------------------------- what the README and the demo say


def demo_block() -> list[str]:
    """The sh block of 'What `make demo` does', comments dropped."""
    block = README.split("## What `make demo` does", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def where_to_look() -> list[str]:
    """The commands and URLs of the README's 'Where to look afterwards' list."""
    section = README.split("Where to look afterwards", 1)[1].split("\n\n", 2)[1]
    return re.findall(r"`([^`]+)`", section)


def demo_hints(stdout: str) -> list[str]:
    """`label: command or URL` lines after 'Look at:' in what scripts/demo.sh printed."""
    hints = stdout.split("Look at:", 1)[1]
    return [line.split(":", 1)[1].strip() for line in hints.splitlines() if ":" in line]


# ---------------------------------------------------------------- running them as a user does


@pytest.fixture(scope="module")
def user_env(deployed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator's environment, with a state directory of its own (the no-op record, the
    protected-service baseline) so other tests' records are neither read nor changed."""
    assert shutil.which("swarm"), "the swarm command is not installed (scripts/setup.sh: pip install -e .)"
    return {**os.environ, "SWARM_STATE_DIR": str(tmp_path_factory.mktemp("readme-state"))}


def as_written(command: str, lab) -> str:
    return command.replace(README_LAB, str(lab.paths.root))


def run(command: str, env: dict[str, str], lab, prelude: str = "") -> subprocess.CompletedProcess[str]:
    script = as_written(f"{prelude}\n{command}" if prelude else command, lab)
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def clean(result: subprocess.CompletedProcess[str], command: str, code: int = 0) -> str:
    """Asserts the exit code and a stderr free of warnings, tracebacks and errors; stdout."""
    said = f"`{command}`: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == code, said
    if code == 0:
        noise = [line for line in result.stderr.splitlines() if UNEXPECTED.search(line)]
        assert not noise, f"`{command}` printed on stderr:\n" + "\n".join(noise[:20])
    return result.stdout


def check_hint(hint: str, env: dict[str, str], lab, prelude: str) -> None:
    """A URL answers 200; a curl gives the service's JSON, not an error; a command exits 0 quietly."""
    if hint.startswith("http"):
        assert httpx.get(as_written(hint, lab), timeout=10).status_code == 200, hint
        return
    out = clean(run(hint, env, lab, prelude), hint)
    if hint.startswith("curl"):
        body = json.loads(out)
        assert not (isinstance(body, dict) and "error" in body), f"`{hint}` answered {out[:500]}"
        assert body, f"`{hint}` answered nothing"


def readme_prelude() -> str:
    first = demo_block()[0]
    assert first.startswith("I="), first
    return first


# ---------------------------------------------------------------- the tests


def test_the_readme_demo_block_runs_as_written(user_env: dict[str, str], lab) -> None:
    commands = demo_block()[1:]
    assert len(commands) == 4 and all(c.startswith("swarm -i $I ") for c in commands), commands
    for command in commands:
        clean(run(command, user_env, lab, readme_prelude()), command)


def test_where_to_look_works_as_written(user_env: dict[str, str], lab) -> None:
    hints = [h for h in where_to_look() if not h.endswith("rollback --phase 3")]
    assert len(hints) == 7, hints
    assert not any(":4000" in h for h in hints), "clients go through the front door, not LiteLLM's port"
    for hint in hints:
        check_hint(hint, user_env, lab, readme_prelude())


def test_the_seed_plan_is_refused_as_the_readme_says(user_env: dict[str, str], lab) -> None:
    command = "swarm plan -i examples/seed-plan.yml"
    assert f"`{command}` exits 2" in README
    result = run(command, user_env, lab)
    clean(result, command, code=2)
    assert "examples/seed-plan.yml" in result.stderr and "vllm-primary cannot start" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_make_demo_and_every_hint_it_prints(user_env: dict[str, str], lab) -> None:
    """scripts/demo.sh (what `make demo` runs after setup) on the deployed lab: every step is a
    no-op or idempotent; then each hint it ends with, as printed."""
    env = {**user_env, "PY": sys.executable}
    if lab.paths.root != Path(README_LAB).expanduser():
        env["SWARM_LAB_DIR"] = str(lab.paths.root)
    out = clean(subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=1800), "make demo")
    hints = demo_hints(out)
    assert [h for h in hints if h == "swarm lab down"], hints  # printed, not run (see the docstring)
    hints = [h for h in hints if h != "swarm lab down"]
    assert len(hints) == 6 and not any(":4000" in h for h in hints), hints
    for hint in hints:
        check_hint(hint, user_env, lab, "")


def test_verify_from_the_project_root(user_env: dict[str, str], lab) -> None:
    """This repository's root has a tests/ package with a conftest: the conformance run must not
    load it (it did: 'No module named tests', exit 2)."""
    command = "swarm -i $I verify --limit oracle"
    out = clean(run(command, user_env, lab, readme_prelude()), command)
    assert "oracle: conforms" in out


def test_init_probe_records_host_keys_first(lab, tmp_path: Path) -> None:
    """`swarm init DIR --node ... --probe` for machines whose host keys are not known yet: the
    fingerprint is shown and recorded once confirmed (there is no project for `swarm trust` yet);
    declined, nothing is probed and the error says what to do."""
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    node = inventory["nodes"]["oracle"]
    known = tmp_path / "known_hosts"
    argv = ["swarm", "init", str(tmp_path / "site"), "--node", f"oracle@{node['address']}/arm64",
            "--ssh-key", str(lab.paths.key), "--known-hosts", str(known), "--probe"]
    declined = subprocess.run(argv, cwd=REPO, input="n\n", capture_output=True, text=True, timeout=120)
    assert declined.returncode == 2, declined.stdout + declined.stderr
    assert "host key is not recorded" in declined.stderr and not known.exists()
    assert "oracle (" in declined.stdout and "SHA256:" in declined.stdout
    accepted = subprocess.run(argv, cwd=REPO, input="y\n", capture_output=True, text=True, timeout=120)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert f"recorded in {known}" in accepted.stdout and "oracle: arm64" in accepted.stdout
    assert node["address"] in known.read_text()
    plan = subprocess.run(["swarm", "plan"], cwd=tmp_path / "site", capture_output=True, text=True, timeout=120)
    clean(plan, "cd DIR && swarm plan")


def test_undo_a_phase_as_the_readme_says(user_env: dict[str, str], lab) -> None:
    """The README's `swarm -i $I rollback --phase 3`, last. Right after the demo phase 3 has one
    release and nothing to undo (exit 2 says so), so it is run as an operator would need it: after
    a deploy that changed phase 3 (an env var on starlord's gpu-monitor, set in the lab inventory
    and then taken out again). The rollback brings back the release the inventory describes, so
    the demo's `swarm -i $I deploy` after it changes nothing."""
    command = next(h for h in where_to_look() if h.endswith("rollback --phase 3"))
    original = lab.inventory_path.read_bytes()
    changed = yaml.safe_load(original)
    services = changed["nodes"]["starlord"].setdefault("services", {})
    services.setdefault("gpu-monitor", {})["extra_env"] = {"SWARM_README_UNDO": "1"}
    try:
        lab.inventory_path.write_text(yaml.safe_dump(changed, sort_keys=False))
        clean(run("swarm -i $I deploy --phase 3", user_env, lab, readme_prelude()), "deploy a change")
    finally:
        lab.inventory_path.write_bytes(original)
    result = run(command, user_env, lab, readme_prelude())
    forward = run("swarm -i $I deploy", user_env, lab, readme_prelude())
    clean(result, command)
    clean(forward, "swarm -i $I deploy")
    assert "SWARM_README_UNDO" not in node_env(lab, "starlord", "gpu-monitor")


def node_env(lab, node: str, service: str) -> str:
    argv = lab.ssh_argv(node, f"docker inspect -f '{{{{.Config.Env}}}}' swarm-{node}-{service}-1")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
