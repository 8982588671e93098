"""Values stay values (issue 24): nothing an inventory, playbook or role value says becomes a
directive in a rendered file, an interpolation in compose, a hang, or bytes on a terminal.

Each hostile case either is an input error naming the file and the key, or renders into a
file that, read back the way its program reads it, holds exactly the value given.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.fleet import render_fleet

INV = "inventory/swarm.yml"
BOOK = "playbooks/ai-swarm.yml"


def _on(node: str, service: str, **values: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["nodes"][node].setdefault("services", {}).setdefault(service, {}).update(values)
    return edit


def _svc(data: dict, name: str) -> dict:
    return next(s for p in data["phases"] for s in p.get("services", []) if s["name"] == name)


def _render(root: Path) -> Any:
    return render_fleet(load_project(root))


def _refused(root: Path) -> str:
    """The input error of loading and rendering `root` (within 30 s: a hang guard, not a timing test)."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            _render(root)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "rendering hung"
    assert isinstance(outcome[0], InputError), f"not refused: {outcome[0]!r}"
    message = str(outcome[0])
    assert str(root) in message, message
    return message


# ---------------------------------------------------------------- the cases, refused

REFUSED: list[tuple[str, str, Callable[[dict], None], list[str]]] = [
    ("pg_hba-newline", INV, _on("oracle", "postgres",
                                client_cidrs=["100.64.0.0/10 scram-sha-256\nhost all all 0.0.0.0/0 trust\n#"]),
     ["nodes.oracle.services.postgres.client_cidrs", "U+000A (a newline)"]),
    ("pg_hba-same-line", INV, _on("oracle", "postgres", client_cidrs=["0.0.0.0/0 trust"]),
     ["client_cidrs", "[0]: expected a network in CIDR form"]),
    ("consul-datacenter", INV, _on("oracle", "consul", datacenter='dc1"\nacl { enabled = false }\n#'),
     ["nodes.oracle.services.consul.datacenter", "U+000A"]),
    ("consul-datacenter-quote", INV, _on("oracle", "consul", datacenter='dc1" acl = "x'),
     ["consul.datacenter", "expected an identifier"]),
    ("redis-maxmemory-newline", INV, _on("oracle", "redis", maxmemory="2gb\nprotected-mode no"),
     ["nodes.oracle.services.redis.maxmemory", "U+000A"]),
    ("redis-maxmemory-word", INV, _on("oracle", "redis", maxmemory="2gb protected-mode no"),
     ["redis.maxmemory", "expected a size"]),
    ("redis-nul", INV, _on("oracle", "redis", maxmemory_policy="allkeys-lru\x00"), ["maxmemory_policy", "NUL"]),
    ("compose-bidi", INV, _on("oracle", "redis", extra_env={"X": "abc\u202edef"}),
     ["redis.extra_env", "U+202E"]),
    ("compose-nul", INV, _on("oracle", "redis", extra_env={"X": "a\x00b"}), ["extra_env", "NUL"]),
    ("port-octal", BOOK, lambda d: _svc(d, "gpu-monitor")["vars"].update(port="0443"),
     ["phases[3].services[3].vars.port", "no leading zero"]),
    ("ipv6-zone", INV, lambda d: d["nodes"]["starlord"].update(address="fe80::1%-oProxyCommand=touch"),
     ["nodes.starlord.address", "without a %zone"]),
    ("five-octets", INV, lambda d: d["nodes"]["starlord"].update(address="1.2.3.4.5"), ["nodes.starlord.address"]),
    ("vault-url-bare-ipv6", INV, lambda d: d["vault"].update(addr="http://fd00::1:8200"), ["vault.addr"]),
    ("allowed-ip-directive", INV, lambda d: d["vars"].update(allowed_ips=["10.0.0.0/8 }\n backend x"]),
     ["vars.allowed_ips", "U+000A"]),
    ("allowed-ip-word", INV, lambda d: d["vars"].update(allowed_ips=["10.0.0.0/8 0.0.0.0/0"]),
     ["vars.allowed_ips", "expected an IP address or a network"]),
    ("gpu-model-bidi", INV, lambda d: d["nodes"]["starlord"]["gpus"][0].update(model="RTX \u202e0904"),
     ["nodes.starlord.gpus[0].model", "bidirectional"]),
    ("fleet-var-escape", INV, lambda d: d["vars"].update(timezone="UTC\x1b[2J"), ["vars.timezone", "ESC"]),
    ("ssh-port-published", BOOK, lambda d: _svc(d, "gpu-monitor")["vars"].update(port=22),
     ["gpu-monitor publishes port 22/tcp on starlord", "sshd"]),
    ("published-twice", "roles/grafana/role.yml", lambda d: d["ports"].append({"port": "{{ port }}", "target": 3001}),
     ["grafana publishes port 3001/tcp on oracle, which itself already publishes"]),
    ("node-named-all", INV, lambda d: d["nodes"].update({"all": d["nodes"].pop("overflow")}), ["nodes.all", "reserved"]),
    ("group-named-all", INV, lambda d: d["groups"].update({"all": {"hosts": ["oracle"]}}), ["groups.all", "reserved"]),
    ("poll-1ns", BOOK, lambda d: d["phases"][2]["gate"].update(poll_interval="0.000000001s"), ["poll_interval"]),
    ("poll-1ms", BOOK, lambda d: d["phases"][2]["gate"].update(poll_interval="1ms"), ["at least 0.01s"]),
    ("consul-check-1ms", "roles/redis/role.yml", lambda d: d["consul"]["check"].update(interval="1ms"),
     ["consul.check.interval"]),
    ("backtracking-pattern", "roles/ollama/role.yml",
     lambda d: d["settings"]["keep_alive"].update(pattern="(a+)+$", nullable=False) or d["defaults"].update(
         keep_alive="a" * 64 + "!"), ["keep_alive", "expected text matching (a+)+$"]),
    ("backreference-pattern", "roles/ollama/role.yml", lambda d: d["settings"]["keep_alive"].update(pattern=r"(a)\1"),
     ["settings.keep_alive", "not a pattern RE2 can run"]),
]


@pytest.mark.parametrize(("file", "edit", "fragments"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_hostile_value_is_refused_naming_file_and_key(project_copy: Path, edit_yaml: Callable, file: str,
                                                     edit: Callable[[dict], None], fragments: list[str]) -> None:
    if "ollama" in file:  # the reference playbook has no Ollama: deploy one on overflow
        edit_yaml(project_copy / BOOK, lambda d: d["phases"][5]["services"].append(
            {"name": "ollama", "role": "ollama", "host": "overflow"}))
    edit_yaml(project_copy / file, edit)
    message = _refused(project_copy)
    for fragment in fragments:
        assert fragment in message, message
    assert "\x1b" not in message and "\x00" not in message and "\u202e" not in message


# ---------------------------------------------------------------- templates that would hang

HEAVY = [
    ("power-tower", "{{ ((10**1000)**1000)**1000 }}", "bits"),
    ("three-loops-over-a-list", "{% for a in big %}{% for b in big %}{% for c in big %}{% endfor %}{% endfor %}"
                                "{% endfor %}", "steps"),
    ("three-loops-over-range", "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
                               "{% endfor %}{% endfor %}{% endfor %}", "items"),
    ("center", "{{ 'x' | center(300000000) }}", "center filter"),
    ("ljust", "{{ 'x'.ljust(300000000) }}", "str.ljust"),
    ("format-width", "{{ '%0300000000d' % 1 }}", "format width"),
    ("doubling-macro", "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}"
                       "{% endmacro %}{{ f('x', 60) }}", "sandbox"),
    ("replace-blowup", "{{ ('ab' * 90000) | replace('a', 'x' * 1000) }}", "more than"),
]


@pytest.mark.parametrize(("template", "why"), [c[1:] for c in HEAVY], ids=[c[0] for c in HEAVY])
def test_a_template_past_its_budget_is_exit_2_naming_the_key(project_copy: Path, edit_yaml: Callable,
                                                          template: str, why: str) -> None:
    edit_yaml(project_copy / INV, lambda d: d["vars"].update(big=list(range(1000)), timezone=template))
    message = _refused(project_copy)
    assert "vars.timezone" in message and why in message, message


def test_the_run_budget_bounds_many_values_that_are_each_under_theirs(project_copy: Path, edit_yaml: Callable) -> None:
    """Forty aliases of a value that does 150k steps: each alone is fine, together refused."""
    heavy = "{% for a in big %}{% for b in big %}{% endfor %}{% endfor %}"
    edit_yaml(project_copy / INV, lambda d: d["vars"].update(
        big=list(range(380)), **{f"v{i}": heavy for i in range(40)}))
    assert "the run's templates do more than" in _refused(project_copy)


# ---------------------------------------------------------------- rendered exactly as given


def _files(root: Path) -> dict[str, str]:
    fleet = _render(root)
    return {f"{n}/{p}": d.decode() for n, nr in fleet.nodes.items() for p, d in nr.files.items()}


def test_dollar_in_extra_env_is_the_text_given(project_copy: Path, edit_yaml: Callable) -> None:
    given = {"X": "$HOME ${PATH:-z}", "Y": "${UNSET:?boom}", "Z": "$$"}
    edit_yaml(project_copy / INV, _on("oracle", "redis", extra_env=given))
    compose = yaml.safe_load(_files(project_copy)["oracle/compose.yml"])
    env = compose["services"]["redis"]["environment"]
    # compose reads `$$` as one `$`: what the container gets is exactly the value given
    assert {k: env[k].replace("$$", "$") for k in given} == given
    assert all("$" not in env[k].replace("$$", "") for k in given)


def test_ipv6_addresses_are_bracketed_in_every_url_and_host_port(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / INV, lambda d: d["nodes"]["starlord"].update(address="fd00::3"))
    files = _files(project_copy)
    # LiteLLM reaches the models through the front door, whose servers name the address
    haproxy = files["oracle/config/haproxy/haproxy.cfg"]
    assert "server vllm-primary [fd00::3]:8000 " in haproxy and "fd00::3:" not in haproxy
    prometheus = yaml.safe_load(files["oracle/config/prometheus/prometheus.yml"])
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert "[fd00::3]:8000" in targets and "[fd00::3]:9091" in targets
    assert "fd00::3" in files["thanos/compose.yml"]  # rag-pipeline's Qdrant on starlord
    assert "http://[fd00::3]:6333" in files["thanos/compose.yml"]


def test_typed_text_is_the_number_it_says(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / BOOK, lambda d: _svc(d, "gpu-monitor")["vars"].update(port="9443"))
    compose = yaml.safe_load(_files(project_copy)["starlord/compose.yml"])
    assert compose["services"]["gpu-monitor"]["ports"] == ["100.72.73.3:9443:9835"]


def test_yaml_values_keep_their_text(project_copy: Path, edit_yaml: Callable) -> None:
    """Text that YAML 1.1 would read as something else (octal, a boolean, a mapping) stays text."""
    edit_yaml(project_copy / INV, lambda d: d["nodes"]["starlord"]["services"]["vllm-primary"].update(
        served_model_name="0443:yes"))
    litellm = yaml.safe_load(_files(project_copy)["oracle/config/litellm/config.yaml"])
    models = {m["litellm_params"]["model"] for m in litellm["model_list"]}
    assert "openai/0443:yes" in models


# ---------------------------------------------------------------- the terminal


def test_no_control_byte_reaches_the_terminal(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / INV, lambda d: d["nodes"]["starlord"].update(address="\x1b]0;owned\x07\x1b[2J\u202e"))
    result = CliRunner().invoke(main, ["--project", str(project_copy), "plan"])
    assert result.exit_code == 2
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", result.output), repr(result.output)
    assert "\\x1b" in result.output and "nodes.starlord.address" in result.output


def test_a_file_that_is_not_an_inventory_is_not_quoted(project_copy: Path, tmp_path: Path) -> None:
    other = tmp_path / "shadow"
    other.write_text("root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n" * 20)
    result = CliRunner().invoke(main, ["--project", str(project_copy), "-i", str(other), "plan"])
    assert result.exit_code == 2 and str(other) in result.output
    assert "hashhashhash" not in result.output  # at most a short excerpt of a line


def test_messages_quote_only_a_short_excerpt(project_copy: Path, edit_yaml: Callable) -> None:
    long = "host-" + "x" * 500
    edit_yaml(project_copy / INV, lambda d: d["nodes"]["starlord"].update(address=long))
    message = _refused(project_copy)
    assert long not in message and "(505 characters)" in message


def test_json_output_of_a_rendered_value_round_trips(project_copy: Path, edit_yaml: Callable) -> None:
    """LiteLLM's client keys file is JSON made by a serializer, whatever the names hold."""
    keys = {"acme.corp-1": "a" * 64}
    edit_yaml(project_copy / INV, lambda d: d["vars"].update(client_keys=keys))
    files = _files(project_copy)
    assert json.loads(files["oracle/config/litellm/client_keys.json"]) == keys
