"""Parsing the one batched read of a node."""

from __future__ import annotations

import json

from orchestrator import commands as cmd
from orchestrator.conformance.facts import (
    STEPS,
    FileInfo,
    Listener,
    facts_script,
    parse_facts,
    parse_file_list,
    parse_image_digests,
    parse_listeners,
)

SS = """LISTEN 0      4096         0.0.0.0:8000      0.0.0.0:*
LISTEN 0      128       198.18.1.2:22        0.0.0.0:*
LISTEN 0      4096            [::]:8000         [::]:*
LISTEN 0      4096       127.0.0.1:41234     0.0.0.0:*
LISTEN 0      4096   [::ffff:198.18.1.2]:9000      *:*
LISTEN 0      4096               *:6333            *:*
"""


def test_listeners_from_ss() -> None:
    assert parse_listeners(SS) == (Listener("0.0.0.0", 8000), Listener("198.18.1.2", 22), Listener("::", 8000),
                                   Listener("127.0.0.1", 41234), Listener("198.18.1.2", 9000), Listener("*", 6333))


def test_file_list_keeps_spaces_in_paths() -> None:
    text = "600 swarm env/a.env\n644 root config/my file.conf\ngarbage\n"
    assert parse_file_list(text) == {"env/a.env": FileInfo(0o600, "swarm"),
                                     "config/my file.conf": FileInfo(0o644, "root")}


def test_image_digests() -> None:
    text = 'sha256:1 ["r/a@sha256:x"]\nsha256:2 []\nsha256:3 null\n'
    assert parse_image_digests(text) == {"sha256:1": ("r/a@sha256:x",), "sha256:2": (), "sha256:3": ()}


def test_script_is_read_only_and_quotes_hostile_paths() -> None:
    script = facts_script("/opt/x; rm -rf /", ["configs/a b/'q'/f"], gpu=True)
    assert not script.mutates
    assert len(script.commands) == len(STEPS)
    text = script.text()
    assert "rm -rf /'" in text  # only ever inside quotes
    assert "'/opt/x; rm -rf /'" in text


def test_parse_facts_from_a_recorded_batch() -> None:
    script = facts_script("/opt/ai-swarm", ["configs/haproxy/abc/haproxy.cfg"], gpu=True)
    outputs = {
        "user": "swarm\n",
        "containers": json.dumps([{"Id": "1", "Name": "/c"}]),
        "images": 'sha256:1 ["r@sha256:x"]\n',
        "listeners": SS,
        "runtimes": '{"nvidia": {}, "runc": {}}',
        "socket": "660 root docker\n",
        "current": "releases/r1\n",
        "release": "swarm:present\n" + json.dumps({"id": "r1", "applied": {"a": "1"}}),
        "files": "600 swarm env/a.env\n644 swarm compose.yml\n",
        "hashes": "aa  ./compose.yml\n",
        "store": "bb  /opt/ai-swarm/configs/haproxy/abc/haproxy.cfg\n",
        "secret_files": "600 swarm /opt/ai-swarm/releases/r1/env/a.env\n",
        "gpus": "0, NVIDIA GeForce RTX 4090, 24564, 100, 24464, 41, 550.54, 3\n",
    }
    steps = [cmd.StepResult(c, 0, outputs[name], "") for name, c in zip(STEPS, script.commands, strict=True)]
    facts = parse_facts("starlord", "/opt/ai-swarm", steps, gpu=True)
    assert facts.user == "swarm" and facts.containers[0]["Id"] == "1"
    assert facts.runtimes == ("nvidia", "runc") and facts.socket_stat == "660 root docker"
    assert facts.current_target == "releases/r1" and facts.release == {"id": "r1", "applied": {"a": "1"}}
    assert facts.hashes == {"compose.yml": "aa"}
    assert facts.store_hashes == {"configs/haproxy/abc/haproxy.cfg": "bb"}
    assert facts.gpus[0].temperature_c == 41
    assert facts.errors == {}


def test_a_failed_step_is_recorded_not_guessed() -> None:
    script = facts_script("/opt/ai-swarm", [], gpu=False)
    steps = [cmd.StepResult(c, 1 if name == "containers" else 0, "", "permission denied" if name == "containers" else "")
             for name, c in zip(STEPS, script.commands, strict=True)]
    facts = parse_facts("oracle", "/opt/ai-swarm", steps, gpu=False)
    assert facts.errors == {"containers": "permission denied"}
    assert facts.containers == () and facts.release is None


# Recorded from dockerd 20.10.24 (Debian) for a container created with
# `-e NVIDIA_VISIBLE_DEVICES=0 -e SECRET_PW=hunter2 --restart unless-stopped --memory 64m`.
RECORDED_INSPECT = (
    '{"Id":"606ea576f645","Name":"/t1","Created":"2026-12-01T20:38:36.129687531Z","Image":"sha256:4487f4",'
    '"State":{"Running":false,"Restarting":false,"Status":"created","ExitCode":0,"Health":null},'
    '"Config":{"Image":"bb:1","User":"","Labels":{"org.swarm.service":"t1"},"Env":["NVIDIA_VISIBLE_DEVICES=0"]},'
    '"HostConfig":{"RestartPolicy":{"MaximumRetryCount":0,"Name":"unless-stopped"},"Memory":67108864,'
    '"NanoCpus":0,"PortBindings":{},"Runtime":"runc"}}\n'
)


def test_containers_are_read_without_their_environment() -> None:
    from orchestrator.conformance.facts import INSPECT_FORMAT

    script = facts_script("/opt/ai-swarm", [], gpu=False)
    assert INSPECT_FORMAT in script.commands[1].argv
    assert "{{json .Config.Env}}" not in INSPECT_FORMAT and "{{json .Config}}" not in INSPECT_FORMAT
    assert '"NVIDIA_VISIBLE_DEVICES"' in INSPECT_FORMAT


def test_recorded_inspect_lines_parse_into_what_the_checks_read() -> None:
    from orchestrator.conformance import checks
    from orchestrator.conformance.facts import parse_json_list

    [row] = parse_json_list(RECORDED_INSPECT)
    assert checks.restart_problems("unless-stopped", row) == []
    assert checks.labels(row) == {"org.swarm.service": "t1"}
    assert row["Config"]["Env"] == ["NVIDIA_VISIBLE_DEVICES=0"]


def test_the_secret_file_search_skips_the_model_store(tmp_path) -> None:
    """A model's tokenizer_config.json is public and 0644; an env file or a *token* file
    elsewhere under the deploy root is still found (run here with sh, as on a node)."""
    import subprocess

    root = tmp_path / "ai-swarm"
    for rel in ("models/Org/Model/abc123/tokenizer_config.json", "current/env/vllm.env",
                "releases/r1/vault-token", "current/compose.yml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    step = facts_script(str(root), [], gpu=False).commands[STEPS.index("secret_files")]
    out = subprocess.run(list(step.argv), capture_output=True, text=True, check=True).stdout
    found = sorted(parse_file_list(out))
    assert found == [str(root / "current/env/vllm.env"), str(root / "releases/r1/vault-token")], out
