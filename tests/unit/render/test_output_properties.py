"""The output side of values (issue 24): for random values of a typed setting, either the setting
refuses it, or the rendered file — read back the way its program reads it, with the real tool
where there is one — holds exactly the value given.

Each property renders one role template (or one compose definition) with the service's real
context and only the one value changed, so a few dozen examples stay fast; the whole-project
path is covered by tests/unit/config/test_values_stay_values.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.config.project import load_project
from orchestrator.render.fleet import fleet_view
from orchestrator.render.services import Service, build_services, compose_service
from orchestrator.render.templates import render_template, role_env
from orchestrator.render.validate import _compose_binary

REPO = Path(__file__).resolve().parents[3]
PROJECT = load_project(REPO)
SERVICES = {s.name: s for s in build_services(PROJECT)}
FLEET = fleet_view(list(SERVICES.values()))
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text with what breaks formats: quotes, escapes, separators, template and shell syntax, non-ASCII
hostile = st.text(st.sampled_from(list("aZ09 _-.:/\"'\\#${}%=;,\t\n\x00\u202e\u2028é✓")), min_size=1, max_size=24)


def _accepted(service: str, key: str, value: Any) -> Any | None:
    """The value as templates get it, or None when the setting refuses it (that is fine too)."""
    spec = PROJECT.roles[SERVICES[service].role].spec
    from orchestrator.config.settings import role_settings

    form = role_settings(spec.defaults, spec.required_vars, spec.settings)[key]
    return None if form.problem(value) else form.canonical(value)


def _render(service: str, src: str, **values: Any) -> str:
    svc = SERVICES[service]
    role = PROJECT.roles[svc.role]
    return render_template(role_env(role), role, src, {**svc.vars, **values, "fleet": FLEET})


# ---------------------------------------------------------------- HCL (Consul)


@EXAMPLES
@given(st.one_of(hostile, st.from_regex(r"[A-Za-z0-9_-]{1,63}", fullmatch=True)))
def test_consul_datacenter_reads_back_from_the_hcl(value: str) -> None:
    accepted = _accepted("consul", "datacenter", value)
    assume(accepted is not None)
    parsed = hcl2.loads(_render("consul", "swarm.hcl.j2", datacenter=accepted))
    assert parsed["datacenter"] == f'"{value}"' or parsed["datacenter"] == value
    assert "acl" not in parsed  # no directive of its own


# ---------------------------------------------------------------- redis.conf, read by redis-server

REDIS = shutil.which("redis-server")


def _redis_reads(conf: str) -> dict[str, str]:
    """Start the real redis-server on the file (no TCP port, a private socket), ask INFO memory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "redis.conf"
        path.write_text(conf + f"\nport 0\nunixsocket {tmp}/s\ndir {tmp}\nappendonly no\nsave \"\"\n")
        server = subprocess.Popen([REDIS or "redis-server", str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(100):
                if (Path(tmp) / "s").exists() or server.poll() is not None:
                    break
                subprocess.run(["sleep", "0.02"], check=False)
            if server.poll() is not None:
                return {"error": server.stdout.read() if server.stdout else ""}
            info = subprocess.run(["redis-cli", "-s", f"{tmp}/s", "INFO", "memory"], capture_output=True,
                                  text=True, timeout=10).stdout
        finally:
            server.terminate()
            server.wait(10)
    return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)


_REDIS_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


@pytest.mark.skipif(REDIS is None or shutil.which("redis-cli") is None, reason="redis-server is not installed")
@FEW
@given(st.one_of(hostile, st.integers(1, 2**40).map(str),
                 st.tuples(st.integers(1, 999), st.sampled_from(["k", "kb", "m", "mb", "g", "gb", "K", "MB"]))
                 .map(lambda t: f"{t[0]}{t[1]}")))
def test_redis_maxmemory_is_what_redis_reads(value: str) -> None:
    accepted = _accepted("redis", "maxmemory", value)
    assume(accepted is not None)
    conf = _render("redis", "redis.conf.j2", maxmemory=accepted).replace('rename-command CONFIG ""\n', "")
    info = _redis_reads(conf)
    number, unit = re.fullmatch(r"([0-9]+)([a-zA-Z]*)", str(value)).groups()  # type: ignore[union-attr]
    assert int(info["maxmemory"]) == int(number) * _REDIS_UNITS[unit.lower()], info
    assert info["maxmemory_policy"].strip() == SERVICES["redis"].vars["maxmemory_policy"]


# ---------------------------------------------------------------- pg_hba.conf


@EXAMPLES
@given(st.one_of(hostile, st.ip_addresses().map(lambda a: f"{a}/{a.max_prefixlen}"),
                 st.sampled_from(["100.64.0.0/10", "fd00::/8", "0.0.0.0/0", "10.0.0.1/8"])))
def test_pg_hba_holds_one_rule_per_network_given(value: str) -> None:
    accepted = _accepted("postgres", "client_cidrs", [value])
    assume(accepted is not None)
    text = _render("postgres", "pg_hba.conf.j2", client_cidrs=accepted)
    rules = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(len(r) == (4 if r[0] == "local" else 5) for r in rules), rules   # no rule gained a field
    assert [r for r in rules if r[3] == value and r[-1] != "reject"] == [["host", "all", "all", value, "scram-sha-256"]]
    assert not [r for r in rules if r[-1] == "trust" and r[0] != "local"]


# ---------------------------------------------------------------- YAML read by Prometheus / LiteLLM

PROMTOOL = shutil.which("promtool")


@EXAMPLES
@given(st.one_of(hostile, st.from_regex(r"[A-Za-z0-9_./:-]{1,40}", fullmatch=True)))
def test_a_served_model_name_is_one_yaml_string_in_prometheus_and_litellm(value: str) -> None:
    accepted = _accepted("vllm-primary", "served_model_name", value)
    assume(accepted is not None)
    fleet = fleet_view([Service(**{**SERVICES[n].__dict__, "vars": {**SERVICES[n].vars, "served_model_name": accepted}})
                        if n == "vllm-primary" else SERVICES[n] for n in SERVICES])
    prometheus = render_template(role_env(PROJECT.roles["prometheus"]), PROJECT.roles["prometheus"], "prometheus.yml.j2",
                                 {**SERVICES["prometheus"].vars, "fleet": fleet})
    labels = [sc["labels"] for job in yaml.safe_load(prometheus)["scrape_configs"] for sc in job["static_configs"]
              if sc.get("labels", {}).get("service") == "vllm-primary"]
    assert labels[0]["model"] == value
    litellm = render_template(role_env(PROJECT.roles["litellm"]), PROJECT.roles["litellm"], "config.yaml.j2",
                              {**SERVICES["litellm"].vars, "fleet": fleet})
    models = {m["litellm_params"]["model"] for m in yaml.safe_load(litellm)["model_list"]}
    assert f"openai/{value}" in models


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
@FEW
@given(st.one_of(hostile, st.from_regex(r"[0-9]{1,4}(ms|s|m|h)", fullmatch=True)))
def test_promtool_reads_the_scrape_interval_given(value: str) -> None:
    accepted = _accepted("prometheus", "scrape_interval", value)
    assume(accepted is not None)
    text = _render("prometheus", "prometheus.yml.j2", scrape_interval=accepted)
    assert yaml.safe_load(text)["global"]["scrape_interval"] == value
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "prometheus.yml").write_text(text.replace("/etc/prometheus/swarm/alerts.yml", f"{tmp}/none.yml"))
        (Path(tmp) / "none.yml").write_text("groups: []\n")
        checked = subprocess.run([PROMTOOL or "promtool", "check", "config", f"{tmp}/prometheus.yml"],
                                 capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---------------------------------------------------------------- compose, read by docker compose

COMPOSE = _compose_binary()


def _compose_env(env: dict[str, str]) -> dict[str, str]:
    svc = SERVICES["redis"]
    _, instance = PROJECT.playbook.service("redis")
    node = PROJECT.inventory.node(svc.node)
    definition = compose_service(PROJECT, instance, PROJECT.roles["redis"], node, {**svc.vars, "extra_env": env},
                                 svc.image, svc.ports)
    definition.pop("env_file", None)
    volumes = {v.split(":")[0]: {} for v in definition.get("volumes", []) if not v.startswith((".", "/"))}
    doc = {"name": "props", "services": {"redis": definition}, "volumes": volumes,
           "networks": {"aiswarm": {"external": True, "name": "aiswarm"}}}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "compose.yml").write_text(yaml.safe_dump(doc))
        out = subprocess.run([*(COMPOSE or []), "-f", f"{tmp}/compose.yml", "config", "--format", "json"],
                             capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": tmp})
    assert out.returncode == 0, out.stderr
    environment: dict[str, str] = json.loads(out.stdout)["services"]["redis"]["environment"]
    # compose prints its config with `$` escaped as `$$`: the container gets one `$`
    return {k: v.replace("$$", "$") for k, v in environment.items()}


@pytest.mark.skipif(COMPOSE is None, reason="docker compose v2 is not installed")
@FEW
@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True), hostile, min_size=1, max_size=3))
def test_extra_env_reaches_the_container_exactly(env: dict[str, str]) -> None:
    accepted = _accepted("redis", "extra_env", env)
    assume(accepted is not None)
    got = _compose_env(accepted)
    assert {k: got[k] for k in env} == env


def test_the_dollar_cases_of_the_issue_through_real_compose() -> None:
    if COMPOSE is None:
        pytest.skip("docker compose v2 is not installed")
    given_env = {"X": "$HOME ${PATH:-z}", "Y": "${UNSET:?boom}"}
    assert {k: v for k, v in _compose_env(given_env).items() if k in given_env} == given_env


# ---------------------------------------------------------------- haproxy.cfg (the gateway example)

HAPROXY = shutil.which("haproxy")
GATEWAY = load_project(REPO / "examples/gateway")


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@FEW
@given(st.one_of(hostile, st.integers(-5, 10**9)))
def test_haproxy_reads_the_rate_limit_given(value: Any) -> None:
    services = {s.name: s for s in build_services(GATEWAY)}
    svc = services["gateway"]
    role = GATEWAY.roles[svc.role]
    from orchestrator.config.settings import role_settings

    form = role_settings(role.spec.defaults, role.spec.required_vars, role.spec.settings)["rate_limit"]
    assume(not form.problem(value))
    text = render_template(role_env(role), role, "gateway.cfg.j2",
                           {**svc.vars, "rate_limit": form.canonical(value), "fleet": fleet_view(list(services.values()))})
    assert f"gt {int(value)} }}" in text
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "h.cfg").write_text(text)
        checked = subprocess.run([HAPROXY or "haproxy", "-c", "-f", f"{tmp}/h.cfg"], capture_output=True, text=True,
                                 timeout=30, env={"GATEWAY_API_KEYS": "k", "VLLM_API_KEY": "v", "PATH": "/usr/bin"})
    assert checked.returncode == 0, checked.stdout + checked.stderr


Parse = Callable[[str], Any]
