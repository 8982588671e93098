"""`swarm init`: a new project for made-up machines passes `swarm plan` at once."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from orchestrator import project_init as pi
from orchestrator.commands.system import machine_facts, parse_machine_facts
from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.plan import make_plan

REPO = Path(__file__).resolve().parents[2]
THREE = ("--node", "box@100.64.0.1", "--node", "gpu1@100.64.0.2/amd64", "--node", "pi@100.64.0.3/arm64",
         "--gpu", "gpu1=NVIDIA GeForce RTX 4090:24564", "--ram", "gpu1=64", "--ram", "box=32", "--ram", "pi=16")


def swarm(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("example", [None, *pi.example_names()])
def test_a_three_machine_fleet_plans_at_once(tmp_path: Path, example: str | None) -> None:
    target = tmp_path / "fleet"
    made = swarm(tmp_path, "init", str(target), *THREE, *(("--example", example) if example else ()))
    assert made.returncode == 0, made.stderr
    planned = swarm(target, "plan")  # from inside the new project, as its README says
    assert planned.returncode == 0, planned.stderr
    project = load_project(target)
    assert list(project.inventory.nodes) == ["box", "gpu1", "pi"]
    assert project.inventory.node("pi").arch == "arm64"
    assert (target / "README.md").read_text().count("| gpu1 | 100.64.0.2 | amd64 | NVIDIA GeForce RTX 4090") == 1


def test_the_example_gpu_node_lands_on_the_machine_with_the_gpu(tmp_path: Path) -> None:
    machines = pi.with_gpus((pi.machine("box", "100.64.0.1"), pi.machine("gpu1", "100.64.0.2")),
                            [("gpu1", "NVIDIA RTX A4000", 16376)])
    written = pi.init_project(pi.InitRequest(tmp_path / "p", pi.with_ram(machines, [("gpu1", 32)]),
                                             example="vllm-server"))
    assert written.mapping == {"model-server": "gpu1"}
    plan = make_plan(load_project(tmp_path / "p"))
    coder = plan.nodes[0].cards[0].instances[0]
    assert coder.service == "coder" and coder.startup.kv_cache_tokens > 4096


def test_example_roles_are_copied_and_shared_roles_are_not(tmp_path: Path) -> None:
    machines = (pi.machine("edge", "100.64.0.1"), pi.machine("gpu1", "100.64.0.2"))
    machines = pi.with_ram(pi.with_gpus(machines, [("gpu1", "NVIDIA GeForce RTX 4090", 24564)]),
                           [("gpu1", 64)])
    pi.init_project(pi.InitRequest(tmp_path / "p", machines, example="gateway"))
    assert sorted(p.name for p in (tmp_path / "p/roles").iterdir()) == ["api-gateway"]
    secrets = (tmp_path / "p/secrets.example.env").read_text()
    assert "GATEWAY_API_KEYS=" in secrets and "VLLM_API_KEY=" in secrets


def test_an_example_needing_a_gpu_is_refused_without_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs 1 machine.s. with a GPU"):
        pi.init_project(pi.InitRequest(tmp_path / "p", (pi.machine("a", "100.64.0.1"),),
                                       example="vllm-server"))
    assert not (tmp_path / "p").exists()  # nothing written


def test_a_plan_that_cannot_work_writes_nothing(tmp_path: Path) -> None:
    small = pi.with_gpus((pi.machine("a", "100.64.0.1"),), [("a", "NVIDIA GeForce GTX 1050", 2048)])
    with pytest.raises(InputError, match="plan cannot work"):
        pi.init_project(pi.InitRequest(tmp_path / "p", pi.with_ram(small, [("a", 64)]),
                                       example="vllm-server"))
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("text", ["nohost", "@1.2.3.4", "a@", "x;rm -rf /@1.2.3.4", "a@1.2.3.4/sparc",
                                  "a@bad host"])
def test_bad_node_options_are_input_errors(text: str) -> None:
    with pytest.raises(InputError, match="--node"):
        pi.parse_node_option(text)


def test_bad_options_exit_2_without_a_traceback(tmp_path: Path) -> None:
    for args in (("--node", "a@1.2.3.4", "--gpu", "b=X:1"), ("--node", "a@1.2.3.4", "--ram", "a=lots"),
                 ("--node", "a@1.2.3.4", "--example", "nope"), ("--node", "a@1.2.3.4", "--node", "a@1.2.3.5")):
        result = swarm(tmp_path, "init", str(tmp_path / "p"), *args)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_a_directory_that_is_not_empty_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mine.txt").write_text("keep")
    result = swarm(tmp_path, "init", str(tmp_path / "p"), "--node", "a@100.64.0.1")
    assert result.returncode == 2 and "not empty" in result.stderr
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["mine.txt"]


def test_machine_facts_is_one_read_only_command() -> None:
    command = machine_facts()
    assert not command.mutates and command.label == "machine-facts"
    facts = parse_machine_facts("arch aarch64\ncpus 4\nmem_kib 23068672\n--- gpus\n")
    assert (facts.arch, facts.cpus, facts.ram_gb, facts.gpus) == ("aarch64", 4, 22.0, ())
    gpu = parse_machine_facts("arch x86_64\ncpus 16\nmem_kib 67108864\n--- gpus\n"
                              "0, NVIDIA GeForce RTX 3080, 10240, 5, 10235, 41, 550.54.14, 0\n")
    assert gpu.gpus == ((0, "NVIDIA GeForce RTX 3080", 10240),) and gpu.ram_gb == 64.0


def test_written_inventory_keeps_the_example_settings(tmp_path: Path) -> None:
    machines = pi.with_ram(pi.with_gpus((pi.machine("g", "100.64.0.9"),),
                                        [("g", "NVIDIA GeForce RTX 4090", 24564)]), [("g", 64)])
    pi.init_project(pi.InitRequest(tmp_path / "p", machines, example="litellm-saas"))
    data = yaml.safe_load((tmp_path / "p/inventory/swarm.yml").read_text())
    assert data["nodes"]["g"]["services"]["llm"]["model"] == "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
    assert data["vault"]["addr"] == "http://100.64.0.9:8200"


def test_an_example_s_published_client_keys_are_never_copied(tmp_path: Path) -> None:
    """litellm-tailnet-ollama's lab-secrets.env publishes the keys whose hashes its inventory
    holds: a project made from it gets fresh keys, their hashes, and the keys in a 0600 file."""
    import hashlib
    import stat

    example = yaml.safe_load((pi.EXAMPLES / "litellm-tailnet-ollama/inventory/swarm.yml").read_text())
    published = {h for node in example["nodes"].values()
                 for h in ((node.get("services") or {}).get("litellm") or {}).get("client_keys", {}).values()}
    assert published, "the example keeps client key hashes"
    machines = tuple(replace(pi.machine(n, f"100.64.0.{i}"), ram_gb=32) for i, n in enumerate(("gw", "a", "b"), 1))
    pi.init_project(pi.InitRequest(tmp_path / "p", machines, example="litellm-tailnet-ollama"))
    text = (tmp_path / "p/inventory/swarm.yml").read_text()
    assert not any(h in text for h in published)
    keys_file = tmp_path / "p" / pi.CLIENT_KEYS_FILE
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    keys = dict(line.split("=", 1) for line in keys_file.read_text().splitlines() if not line.startswith("#"))
    assert set(keys) == {"acme", "globex"}
    for key in keys.values():
        assert hashlib.sha256(key.encode()).hexdigest() in text
    assert pi.CLIENT_KEYS_FILE in (tmp_path / "p/.gitignore").read_text()


def test_an_ipv6_machine_gets_bracketed_vault_and_consul_urls(tmp_path: Path) -> None:
    machines = (replace(pi.machine("gw", "fd00::1"), ram_gb=32),)
    pi.init_project(pi.InitRequest(tmp_path / "p", machines))
    inventory = load_project(tmp_path / "p").inventory.spec
    assert (inventory.vault.addr, inventory.consul.addr) == ("http://[fd00::1]:8200", "http://[fd00::1]:8500")
