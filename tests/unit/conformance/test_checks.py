"""The pure conformance checks: recorded `docker inspect` shapes in, problems out."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.conformance import checks
from orchestrator.conformance.facts import FileInfo, Listener
from orchestrator.facts.gpu import GpuReading
from orchestrator.render.services import Port


def container(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Id": "abc123" * 10, "Name": "/swarm-starlord-vllm-primary-1", "Created": "2026-11-22T12:00:00Z",
        "Image": "sha256:img1",
        "State": {"Status": "running", "Running": True, "Restarting": False, "ExitCode": 0,
                  "Health": {"Status": "healthy", "Log": []}},
        "Config": {"Image": "198.18.0.1:5000/vllm/vllm-openai:v0.6.3", "User": "",
                   "Env": ["NVIDIA_VISIBLE_DEVICES=0", "PATH=/usr/bin"],
                   "Labels": {"com.docker.compose.project": "swarm-starlord",
                              "com.docker.compose.service": "vllm-primary"}},
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}, "Memory": 24 * 1024**3,
                       "NanoCpus": 8_000_000_000, "Runtime": "nvidia",
                       "PortBindings": {"8000/tcp": [{"HostIp": "", "HostPort": "8000"}]}},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


COMPOSE = {"restart": "unless-stopped", "deploy": {"resources": {"limits": {"cpus": "8.0", "memory": "24g"}}}}


def test_a_conforming_container_has_no_problems() -> None:
    c = container()
    assert checks.running_problems(c) == []
    assert checks.health_problems(c) == []
    assert checks.image_problems("198.18.0.1:5000/vllm/vllm-openai:v0.6.3", c, None, {}) == []
    assert checks.user_problems(None, "runs as root upstream", c) == []
    assert checks.restart_problems("unless-stopped", c) == []
    assert checks.limit_problems(COMPOSE, c) == []
    assert checks.port_problems((Port(port=8000, target=8000),), c) == []
    assert checks.gpu_container_problems(c, "0") == []


def test_find_container_prefers_the_running_one_of_the_project() -> None:
    stopped = container(Id="old", State={"Running": False, "Status": "exited"})
    running = container(Id="new")
    other = container(Id="x", Config={"Labels": {"com.docker.compose.project": "other",
                                                 "com.docker.compose.service": "vllm-primary"}})
    found = checks.find_container([other, stopped, running], "swarm-starlord", "vllm-primary")
    assert found is not None and found["Id"] == "new"
    assert checks.find_container([other], "swarm-starlord", "vllm-primary") is None


def test_stopped_and_unhealthy_containers_are_named() -> None:
    stopped = container(State={"Status": "exited", "Running": False, "ExitCode": 137})
    assert checks.running_problems(stopped) == ["swarm-starlord-vllm-primary-1 is exited (exit code 137), not running"]
    sick = container(State={"Health": {"Status": "unhealthy", "Log": [{"Output": "connection refused\n"}]}})
    assert checks.health_problems(sick) == ["swarm-starlord-vllm-primary-1 is unhealthy: connection refused"]


def test_image_and_pinned_digest() -> None:
    c = container()
    assert "runs image" in checks.image_problems("other:1", c, None, {})[0]
    pin = "198.18.0.1:5000/vllm/vllm-openai@sha256:aaa"
    assert checks.image_problems(c["Config"]["Image"], c, pin,
                                 {"sha256:img1": ("198.18.0.1:5000/vllm/vllm-openai@sha256:aaa",)}) == []
    problems = checks.image_problems(c["Config"]["Image"], c, pin,
                                     {"sha256:img1": ("198.18.0.1:5000/vllm/vllm-openai@sha256:bbb",)})
    assert "not the one preflight verified" in problems[0]


@pytest.mark.parametrize("user", ["", "0", "root", "0:0", "root:root"])
def test_root_without_a_reason_is_a_problem(user: str) -> None:
    c = container(Config={"User": user})
    assert any("no root_reason" in p for p in checks.user_problems(user or None, None, c))


def test_user_must_be_the_rendered_one() -> None:
    c = container(Config={"User": "1000:1000"})
    assert checks.user_problems("65534:65534", None, c)[0].startswith("swarm-starlord-vllm-primary-1 runs as user '1000:1000'")
    assert checks.user_problems("1000:1000", None, c) == []


def test_restart_policy_and_limits() -> None:
    c = container(HostConfig={"RestartPolicy": {"Name": "no"}, "Memory": 0, "NanoCpus": 0})
    assert "restart policy is 'no'" in checks.restart_problems("unless-stopped", c)[0]
    problems = checks.limit_problems(COMPOSE, c)
    assert len(problems) == 2 and "memory limit" in problems[0] and "CPU limit" in problems[1]


@pytest.mark.parametrize(("text", "size"), [("24g", 24 * 1024**3), ("256m", 256 * 1024**2), ("512MiB", 512 * 1024**2),
                                            ("1024", 1024), ("1.5g", int(1.5 * 1024**3)), (4096, 4096)])
def test_parse_bytes(text: str | int, size: int) -> None:
    assert checks.parse_bytes(text) == size


def test_parse_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        checks.parse_bytes("lots")


def test_ports_exactly_as_declared_and_on_all_addresses() -> None:
    c = container(HostConfig={"PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}],
                                               "9000/tcp": [{"HostIp": "", "HostPort": "9000"}]}})
    problems = checks.port_problems((Port(port=8000, target=8000), Port(port=8001, target=8001)), c)
    assert "does not publish 8001->8001/tcp" in problems[0]
    assert "publishes 9000->9000/tcp, which the role does not declare" in problems[1]
    assert "only on 127.0.0.1" in problems[2]


def test_gpu_container_needs_runtime_and_devices() -> None:
    c = container(HostConfig={"Runtime": "runc"}, Config={"Env": []})
    problems = checks.gpu_container_problems(c, "0")
    assert "runtime 'runc'" in problems[0] and "NVIDIA_VISIBLE_DEVICES=None" in problems[1]


def test_unknown_listeners_only_on_the_node_address_or_everywhere() -> None:
    listeners = [Listener("0.0.0.0", 22), Listener("198.18.1.2", 8000), Listener("127.0.0.1", 5000),
                 Listener("::", 16399), Listener("198.18.1.9", 7000), Listener("198.18.1.2", 9999)]
    problems = checks.unknown_listeners(listeners, "198.18.1.2", {22, 8000})
    assert problems == ["port 9999 is listening on 198.18.1.2, and no service of the playbook publishes it",
                        "port 16399 is listening on ::, and no service of the playbook publishes it"]


def test_foreign_and_orphan_containers() -> None:
    hand = container(Name="/intruder", Config={"Labels": {}, "Image": "x:1"},
                     HostConfig={"PortBindings": {"6333/tcp": [{"HostPort": "16399"}]}})
    orphan = container(Name="/swarm-starlord-old-1", Config={"Labels": {"com.docker.compose.project": "swarm-starlord",
                                                                        "com.docker.compose.service": "old"}})
    stopped = container(Name="/gone", State={"Running": False}, Config={"Labels": {}})
    problems = checks.foreign_containers([container(), hand, orphan, stopped], "swarm-starlord", {"vllm-primary"})
    assert problems == ["container intruder (x:1, 16399/tcp) runs outside the compose project swarm-starlord",
                        "container swarm-starlord-old-1 is service 'old' of swarm-starlord, which the playbook "
                        "does not define on this node"]


def test_release_problems() -> None:
    assert "no current release" in checks.release_problems(None, None)[0]
    assert checks.release_problems("releases/r1", {"id": "r1"}) == []
    assert "says id 'r2'" in checks.release_problems("releases/r1", {"id": "r2"})[0]
    assert "not valid JSON" in checks.release_problems("releases/r1", {"corrupt": True})[0]


def test_file_drift_missing_changed_and_extra() -> None:
    expected = {"compose.yml": b"a", "config/x/y.conf": b"b", "config/x/z.conf": b"c"}
    actual = {"compose.yml": checks.sha256(b"a"), "config/x/y.conf": checks.sha256(b"edited"),
              "config/x/extra": "00", "release.json": "11"}
    assert checks.file_drift(expected, actual, "current", ignore=["release.json"]) == [
        "current/config/x/z.conf is missing",
        "current/config/x/y.conf differs from what `swarm render` produces now",
        "current/config/x/extra is on the node but not in the render"]


def test_env_files() -> None:
    files = {"env/a.env": FileInfo(0o600, "swarm"), "env/b.env": FileInfo(0o644, "root")}
    assert checks.env_file_problems(["a", "b", "c"], files, "swarm") == [
        "current/env/b.env has mode 0644, expected 0600", "current/env/b.env is owned by root, expected swarm",
        "current/env/c.env is missing"]


def test_applied_hashes() -> None:
    assert checks.applied_problems({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == [
        "b runs definition 2, the render and Vault give 3 now: redeploy",
        "c was never applied by a deploy (not in release.json)"]


def test_security_baseline() -> None:
    files = {"/opt/ai-swarm/releases/r/env/a.env": FileInfo(0o644, "swarm"),
             "/opt/ai-swarm/releases/r/env/b.env": FileInfo(0o640, "swarm")}
    assert checks.secret_file_problems(files) == ["/opt/ai-swarm/releases/r/env/a.env is readable by others (mode 0644)"]
    assert checks.socket_problems("660 root docker") == []
    assert "world-writable" in checks.socket_problems("666 root docker")[0]
    assert "not found" in checks.socket_problems(None)[0]
    assert checks.runtime_problems(["nvidia", "runc"]) == []
    assert "no nvidia runtime" in checks.runtime_problems(["runc"])[0]


def test_thermal() -> None:
    cool = GpuReading(0, "RTX 4090", 24564, 1, 2, 60, "550.1", 5)
    hot = GpuReading(1, "RTX 4090", 24564, 1, 2, 90, "550.1", 5)
    unknown = GpuReading(2, "RTX 4090", 24564, 1, 2, None, "550.1", 5)
    assert checks.thermal_problems([cool], 85, 1) == []
    problems = checks.thermal_problems([cool, hot, unknown], 85, 3)
    assert "90 °C" in problems[0] and "not reported" in problems[1]
    assert "lists 1 GPU(s), the inventory says 2" in checks.thermal_problems([cool], 85, 2)[0]


# ---------------------------------------------------------------- real servers


def test_postgres_query_answer_from_the_roles_database() -> None:
    ok = "litellm|litellm|PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu\n"
    assert checks.postgres_query_problems("pg", 0, ok, "litellm", "litellm") == []
    assert checks.postgres_query_problems("pg", 0, ok, "other", "litellm") == [
        "pg answered from database 'litellm', the role says 'other'"]
    assert checks.postgres_query_problems("pg", 0, "x|litellm|stand-in 0.0", "x", "litellm") == [
        "pg does not say it is PostgreSQL: 'stand-in 0.0'"]


def test_postgres_query_failures_are_named() -> None:
    failed = checks.postgres_query_problems("pg", 2, "psql: error: connection refused", "d", "u")
    assert failed[0].startswith("pg: `SELECT current_database()") and "exit 2" in failed[0]
    assert "not three columns" in checks.postgres_query_problems("pg", 0, "", "d", "u")[0]


RENDERED = {"global": {"scrape_interval": "15s"},
            "scrape_configs": [{"job_name": "prometheus"}, {"job_name": "vllm"}]}
BUILD = {"status": "success", "data": {"version": "2.42.0+ds"}}


def test_prometheus_runs_what_the_render_says() -> None:
    loaded = {"global": {"scrape_interval": "15s", "scrape_timeout": "10s"},
              "scrape_configs": [{"job_name": "prometheus"}, {"job_name": "vllm"}]}
    assert checks.prometheus_problems("prom", BUILD, loaded, RENDERED) == []


def test_prometheus_drift_and_a_server_without_build_info() -> None:
    loaded = {"global": {"scrape_interval": "1m"}, "scrape_configs": [{"job_name": "prometheus"}]}
    assert checks.prometheus_problems("prom", BUILD, loaded, RENDERED) == [
        "prom scrapes every 1m, the render says 15s",
        "prom has not loaded scrape job(s) vllm of the render"]
    problems = checks.prometheus_problems("prom", None, None, RENDERED)
    assert problems[0].startswith("prom: /api/v1/status/buildinfo gave no version")
    assert problems[1] == "prom: /api/v1/status/config gave no configuration"
