"""Malformed and hostile inventories, playbooks and roles: each one is an input error that
names the file (and line) and the key, never an internal error, never a template side effect.

Each case edits a fresh copy of the shipped project, then loads and renders it in-process
(the real-tool checks have their own tests in tests/unit/render/test_validate.py).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.fleet import render_fleet

INV = "inventory/swarm.yml"
BOOK = "playbooks/ai-swarm.yml"


def _phase(data: dict, name: str) -> dict:
    return next(p for p in data["phases"] if p["name"] == name)


def _svc(data: dict, name: str) -> dict:
    return next(s for p in data["phases"] for s in p.get("services", []) if s["name"] == name)


def _primary(data: dict) -> dict:
    return data["nodes"]["starlord"]["services"]["vllm-primary"]


Edit = Callable[[dict], Any]

# (id, file, edit of the YAML data, fragments the message must contain)
DATA_CASES: list[tuple[str, str, Edit, list[str]]] = [
    ("ssh-port-0", INV, lambda d: d["ssh"].update(port=0), ["ssh.port", "greater than or equal to 1"]),
    ("ssh-port-negative", INV, lambda d: d["ssh"].update(port=-1), ["ssh.port"]),
    ("ssh-port-70000", INV, lambda d: d["ssh"].update(port=70000), ["ssh.port", "less than or equal to 65535"]),
    ("ssh-port-bool", INV, lambda d: d["ssh"].update(port=True), ["ssh.port", "expected a number, got True"]),
    ("ssh-user-space", INV, lambda d: d["ssh"].update(user="swarm admin"), ["ssh.user", "not a user name"]),
    ("address-option", INV, lambda d: d["nodes"]["oracle"].update(address="-oProxyCommand=id"),
     ["nodes.oracle.address", "not a host name or IP address"]),
    ("address-shell", INV, lambda d: d["nodes"]["thanos"].update(address="1.2.3.4;id"), ["nodes.thanos.address"]),
    ("deploy-root-relative", INV, lambda d: d.update(deploy_root="opt/ai-swarm"), ["deploy_root", "absolute"]),
    ("deploy-root-dotdot", INV, lambda d: d.update(deploy_root="/opt/../etc"), ["deploy_root"]),
    ("deploy-root-slash", INV, lambda d: d.update(deploy_root="/"), ["deploy_root"]),
    ("max-model-len-text", INV, lambda d: _primary(d).update(max_model_len="32k"),
     ["nodes.starlord.services.vllm-primary.max_model_len", 'expected a whole number, got "32k"']),
    ("max-model-len-negative", INV, lambda d: _primary(d).update(max_model_len=-32768), ["at least 1"]),
    ("max-model-len-fraction", INV, lambda d: _primary(d).update(max_model_len=4096.7), ["expected a whole number"]),
    ("utilization-percent", INV, lambda d: _primary(d).update(gpu_memory_utilization="85%"),
     ["gpu_memory_utilization", "expected a finite number"]),
    ("utilization-above-1", INV, lambda d: _primary(d).update(gpu_memory_utilization=1.5), ["at most 1"]),
    ("utilization-zero", INV, lambda d: _primary(d).update(gpu_memory_utilization=0), ["more than 0"]),
    ("kv-cache-dtype", INV, lambda d: _primary(d).update(kv_cache_dtype="fp4"),
     ["kv_cache_dtype", "expected one of: auto, fp8, fp8_e4m3, fp8_e5m2"]),
    ("quantization", INV, lambda d: _primary(d).update(quantization="int3"), ["quantization", "expected one of: null, aqlm"]),
    ("setting-typo", INV, lambda d: _primary(d).update(max_modle_len=4096),
     ["unknown setting `max_modle_len` for role vllm (did you mean `max_model_len`?)"]),
    ("gpu-zero-text", INV, lambda d: _primary(d).update(gpu="zero"), ["vllm-primary.gpu", "expected text matching [0-9]"]),
    ("group-var-port", INV, lambda d: d["groups"]["gpu"]["vars"].update(port="eighty"),
     ["groups.gpu.vars.port", "expected a port number 1..65535"]),
    ("min-healthy-over-deadline", INV, lambda d: _primary(d).update(min_healthy_time="20m", healthy_deadline="15m"),
     ["min_healthy_time must be at most healthy_deadline"]),
    ("deadline-text", INV, lambda d: _primary(d).update(healthy_deadline="forever"), ["healthy_deadline", "duration"]),
    ("extra-env-name", INV, lambda d: _primary(d).update(extra_env={"BAD NAME": "x"}),
     ["extra_env", "not an environment variable name"]),
    ("node-name-newline", INV, lambda d: d["nodes"].update({"oracle\n": d["nodes"].pop("oracle")}), ["names use"]),
    ("services-on-other-node", INV, lambda d: d["nodes"]["thanos"]["services"].update({"vllm-primary": {}}),
     ["nodes.thanos.services.vllm-primary", "runs on starlord, not thanos"]),
    ("protected-typo", INV, lambda d: d["nodes"]["starlord"].update(protected=["qdrnt"]),
     ["nodes.starlord.protected[0]", "did you mean `qdrant`?"]),
    ("mirror-url", INV, lambda d: d["registry"].update(mirror="http://mirror"), ["registry.mirror"]),
    ("vault-addr", INV, lambda d: d["vault"].update(addr="vault; id"), ["vault.addr", "not an http(s) URL"]),
    ("vault-path-escape", INV, lambda d: d["vault"].update(path="../sys"), ["vault.path", "leaves its directory"]),
    ("shadow-builtin", INV, lambda d: d["vars"].update(config_dir="/etc"),
     ["vars.config_dir", "`config_dir` is set by swarm"]),
    ("ram-bool", INV, lambda d: d["nodes"]["oracle"].update(ram_gb=True), ["nodes.oracle.ram_gb"]),
    ("network-name", INV, lambda d: d["network"].update(name="a b"), ["network.name"]),
    ("role-escape", BOOK, lambda d: _svc(d, "postgres").update(role="../roles/postgres"),
     ["phases[2].services[0].role", "names use lowercase"]),
    ("role-absolute", BOOK, lambda d: _svc(d, "postgres").update(role="/etc"), ["phases[2].services[0].role"]),
    ("role-typo", BOOK, lambda d: _svc(d, "postgres").update(role="postgress"),
     ["phases[2].services[0].role", "no role named 'postgress'", "did you mean `postgres`?"]),
    ("role-300-chars", BOOK, lambda d: _svc(d, "postgres").update(role="r" * 300), ["phases[2].services[0].role"]),
    ("depends-cycle", BOOK, lambda d: _svc(d, "postgres").update(depends_on=["litellm"]),
     ["services depend on each other in a cycle", "postgres -> litellm -> postgres"]),
    ("depends-self", BOOK, lambda d: _svc(d, "redis").update(depends_on=["redis"]), ["cycle"]),
    ("directories-escape", BOOK, lambda d: _phase(d, "infrastructure")["infrastructure"].update(directories=["../etc"]),
     ["phases[1].infrastructure.directories[0]", "leaves its directory"]),
    ("directories-absolute", BOOK, lambda d: _phase(d, "infrastructure")["infrastructure"].update(directories=["/etc"]),
     ["directories[0]", "absolute path"]),
    ("secret-path-escape", BOOK, lambda d: d["secrets"]["redis_password"].update(path="../../sys/raw"),
     ["secrets.redis_password.path", "leaves its directory"]),
    ("secret-path-absolute", BOOK, lambda d: d["secrets"]["redis_password"].update(path="/sys"), ["secrets.redis_password.path"]),
    ("gate-order", BOOK, lambda d: _phase(d, "control-plane")["gate"].update(min_healthy_time="10m"),
     ["phases[2].gate", "min_healthy_time (600s) is longer than healthy_deadline (300s)"]),
    ("gate-inf", BOOK, lambda d: _phase(d, "control-plane")["gate"].update(healthy_deadline=float("inf")),
     ["phases[2].gate.healthy_deadline", ".inf is not a finite number"]),
    ("playbook-port-0", BOOK, lambda d: _svc(d, "gpu-monitor")["vars"].update(port=0),
     ["phases[3].services[3].vars.port", "expected a port number 1..65535, got 0"]),
    ("playbook-setting-typo", BOOK, lambda d: _svc(d, "vllm-primary")["vars"].update(teir="primary"),
     ["phases[3].services[1].vars.teir", "unknown setting `teir`", "did you mean `tier`?"]),
    ("service-name-newline", BOOK, lambda d: _svc(d, "redis").update(name="redis\n"), ["phases[2].services[1].name"]),
    ("phase-id-bool", BOOK, lambda d: _phase(d, "starlord").update(id=True), ["phases[3].id"]),
    ("template-dest-escape", "roles/redis/role.yml", lambda d: d["templates"][0].update(dest="../../../x"),
     ["templates[0].dest", "leaves its directory"]),
    ("template-src-escape", "roles/redis/role.yml", lambda d: d["templates"][0].update(src="../../inventory/swarm.yml"),
     ["templates[0].src"]),
    ("image-empty", "roles/redis/role.yml", lambda d: d["image"].update(name=""), ["image.name", "must not be empty"]),
    ("image-space", "roles/redis/role.yml", lambda d: d["image"].update(name="redis 7"), ["image.name"]),
    ("image-tag-empty", INV, lambda d: _primary(d).update(image_tag=""), ["image_tag", "expected text matching"]),
    ("env-name-space", "roles/redis/role.yml", lambda d: d.setdefault("env", {}).update({"BAD NAME": "x"}),
     ["env.BAD NAME", "environment variable names"]),
    ("cpus-lots", "roles/redis/role.yml", lambda d: d["limits"].update(cpus="lots"), ["limits.cpus", 'got "lots"']),
    ("memory-lots", "roles/redis/role.yml", lambda d: d["limits"].update(memory="lots"), ["limits.memory"]),
    ("secret-in-argv", "roles/redis/role.yml", lambda d: d["healthcheck"].update(
        test=['redis-cli -a "$$REDIS_PASSWORD" ping']), ["healthcheck.test[0]", "expands secret_env REDIS_PASSWORD"]),
    ("mode-999", "roles/redis/role.yml", lambda d: d["templates"][0].update(mode="999"), ["templates[0].mode"]),
    ("cap-lowercase", "roles/vault/role.yml", lambda d: d.update(cap_add=["ipc_lock; id"]), ["cap_add"]),
]


@pytest.mark.parametrize(("file", "edit", "fragments"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_value_is_an_input_error_naming_file_and_key(project_copy: Path, edit_yaml: Callable, file: str,
                                                        edit: Edit, fragments: list[str]) -> None:
    edit_yaml(project_copy / file, edit)
    message = _input_error(project_copy)
    for fragment in fragments:
        assert fragment in message
    assert "internal error" not in message


def _input_error(root: Path) -> str:
    with pytest.raises(InputError) as err:
        render_fleet(load_project(root))
    message = str(err.value)
    assert str(root) in message, message  # the file is named
    return message


# ---------------------------------------------------------------- raw YAML text

RAW_CASES: list[tuple[str, str, str, str, list[str]]] = [
    # (id, file, old text, new text, fragments)
    ("octal-port", INV, "  port: 22\n", "  port: 022\n", ["swarm.yml:7: ssh.port: 022 is octal 18"]),
    ("yes-bool", BOOK, "    optional: true\n", "    optional: yes\n", ["yes is a boolean in YAML 1.1"]),
    ("nan-timeout", INV, "  connect_timeout: 10\n", "  connect_timeout: .nan\n", [".nan is not a finite number"]),
    ("inf-ram", INV, "    ram_gb: 22\n", "    ram_gb: .inf\n", [".inf is not a finite number"]),
    ("huge-int", INV, "    ram_gb: 22\n", "    ram_gb: " + "9" * 5000 + "\n", ["more than 40 digits"]),
    ("base-60", INV, "  port: 22\n", "  port: 22:22\n", ["base-60"]),
    ("unhashable-key", INV, "fleet: ai-swarm\n", "fleet: ai-swarm\n? [a, b]\n: x\n", ["a mapping key must be a plain value"]),
    ("self-alias", INV, "fleet: ai-swarm\n", "fleet: ai-swarm\nx-loop: &loop [*loop]\n", ["alias refers to a value that contains it"]),
    ("deep-nesting", INV, "fleet: ai-swarm\n", "fleet: ai-swarm\nx-deep: " + "[" * 500 + "]" * 500 + "\n",
     ["nested more than 64 levels"]),
    ("alias-bomb", INV, "fleet: ai-swarm\n", "fleet: ai-swarm\nx-a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"x-{i}: &l{i} [" + ", ".join([f"*{'a' if i == 0 else f'l{i - 1}'}"] * 10) + "]\n" for i in range(7)),
     ["more than 100000 values"]),
    ("lipsum-escape", INV, "  timezone: UTC\n",
     "  timezone: \"{{ lipsum.__globals__['os'].popen('touch SIDE_EFFECT').read() }}\"\n",
     ["swarm.yml:", "vars.timezone", "'lipsum' is undefined"]),
    ("class-escape", INV, "  timezone: UTC\n",
     "  timezone: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n", ["vars.timezone", "template"]),
    ("string-bomb", INV, "  timezone: UTC\n", "  timezone: \"{{ 'x' * 10**9 }}\"\n", ["vars.timezone", "sandbox"]),
    ("range-bomb", INV, "  timezone: UTC\n",
     "  timezone: \"{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}\"\n",
     ["vars.timezone", "sandbox"]),
    ("zero-division", INV, "  timezone: UTC\n", "  timezone: \"{{ 1 // 0 }}\"\n", ["vars.timezone", "ZeroDivisionError"]),
]


@pytest.mark.parametrize(("file", "old", "new", "fragments"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_bad_yaml_text_is_an_input_error(project_copy: Path, file: str, old: str, new: str,
                                         fragments: list[str]) -> None:
    path = project_copy / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    cwd = os.getcwd()
    os.chdir(project_copy)  # a template side effect would land here
    try:
        message = _input_error(project_copy)
    finally:
        os.chdir(cwd)
    for fragment in fragments:
        assert fragment in message
    assert not (project_copy / "SIDE_EFFECT").exists()


# ---------------------------------------------------------------- template files

TEMPLATE_CASES = [
    ("1 // 0", "{{ 1 // 0 }}", "ZeroDivisionError"),
    ("unknown test", "{% if maxmemory is nosuchtest %}x{% endif %}", "nosuchtest"),
    ("unknown filter", "{{ maxmemory | nosuchfilter }}", "nosuchfilter"),
    ("missing include", "{% include 'nothere.conf' %}", "template not found: nothere.conf"),
    ("include escape", "{% include '../../inventory/swarm.yml' %}", "template not found"),
    ("recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion"),
    ("escape", "{{ self.__init__.__globals__ }}", "sandbox"),
    ("undefined", "{{ no_such_variable }}", "'no_such_variable' is undefined"),
]


@pytest.mark.parametrize(("line", "expected"), [c[1:] for c in TEMPLATE_CASES], ids=[c[0] for c in TEMPLATE_CASES])
def test_template_runtime_error_names_template_file_and_line(project_copy: Path, line: str, expected: str) -> None:
    tpl = project_copy / "roles/redis/redis.conf.j2"
    lines = tpl.read_text().splitlines()
    lines.insert(2, line)
    tpl.write_text("\n".join(lines) + "\n")
    message = _input_error(project_copy)
    assert f"{tpl}:3" in message
    assert expected in message


def test_template_with_bytes_that_are_not_utf8(project_copy: Path) -> None:
    tpl = project_copy / "roles/redis/redis.conf.j2"
    tpl.write_bytes(tpl.read_bytes().replace(b"port 6379", b"port \xff\xfe 6379"))
    message = _input_error(project_copy)
    assert f"{tpl}:3" in message and "not UTF-8" in message


# ---------------------------------------------------------------- files that are not files


def test_inventory_fifo_is_refused_without_blocking(project_copy: Path) -> None:
    inv = project_copy / INV
    inv.unlink()
    os.mkfifo(inv)
    errors: list[str] = []
    worker = threading.Thread(target=lambda: errors.append(_input_error(project_copy)), daemon=True)
    worker.start()
    worker.join(30)  # a hang guard, not a timing assertion: reading a FIFO would block forever
    assert not worker.is_alive(), "loading a FIFO inventory blocked"
    assert "not a regular file" in errors[0]


def test_inventory_that_is_a_directory(project_copy: Path) -> None:
    inv = project_copy / INV
    inv.unlink()
    inv.mkdir()
    assert "it is a directory" in _input_error(project_copy)


def test_huge_inventory_is_refused_by_size(project_copy: Path) -> None:
    inv = project_copy / INV
    inv.write_text(inv.read_text() + "#" * (3 * 1024 * 1024) + "\n")
    assert re.search(r"more than the \d+ allowed", _input_error(project_copy))


def test_error_line_points_at_the_value_not_the_alias(project_copy: Path) -> None:
    inv = project_copy / INV
    text = inv.read_text().replace("ssh:\n  user: swarm\n", "x-common: &c {port: 0}\nssh:\n  user: swarm\n")
    inv.write_text(text.replace("  port: 22\n", "  <<: *c\n", 1))
    data = yaml.safe_load(inv.read_text())
    assert data["ssh"]["port"] == 0
    assert "ssh.port" in _input_error(project_copy)
