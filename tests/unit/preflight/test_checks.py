"""Preflight checks as data: facts in, pass/warn/fail with the right node and message out.

The services are the shipped fleet's own (rendered from the repository), the facts are
what a node's one batched command would report; the TCP probe script runs for real
against loopback sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.clients.images import Platform, parse_image_ref
from orchestrator.clients.registry import ImageIndex, PlatformManifest
from orchestrator.commands import Command, DiskFree, StepResult
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project, load_project
from orchestrator.engine.selection import checked_phases, select
from orchestrator.errors import ServiceError
from orchestrator.facts.gpu import GpuReading, parse_nvidia_smi
from orchestrator.facts.probes import Outcome
from orchestrator.preflight import checks
from orchestrator.preflight.facts import (
    FactsRequest,
    NodeFacts,
    Smoke,
    parse_facts,
    parse_probe_line,
    probe_script,
)
from orchestrator.preflight.report import Report
from orchestrator.preflight.run import plan_requests, require_passed
from orchestrator.preflight.scope import Scope, dependencies, vram_needs
from orchestrator.render.fleet import render_fleet
from orchestrator.render.plan import make_plan
from orchestrator.render.services import Service, build_services
from orchestrator.transport.local import LocalTransport

REPO = Path(__file__).resolve().parents[3]
GPU_FIXTURES = REPO / "tests/unit/fixtures/gpu"
GIB = 1024 * 1024  # KiB


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(REPO)


@pytest.fixture(scope="module")
def services(project: Project) -> dict[str, Service]:
    return {s.name: s for s in build_services(project)}


def node(project: Project, name: str) -> Node:
    return project.inventory.node(name)


def healthy_facts(**changes: object) -> NodeFacts:
    base = NodeFacts(
        arch="x86_64", docker_client="24.0.5", docker_server="24.0.5", compose="2.27.0",
        runtimes=("io.containerd.runc.v2", "nvidia", "runc"), docker_root="/var/lib/docker",
        disk_deploy_root=DiskFree(500 * GIB, 400 * GIB, "/"),
        disk_docker_root=DiskFree(500 * GIB, 400 * GIB, "/"), listening=frozenset({22}),
        gpus=(GpuReading(0, "NVIDIA GeForce RTX 4090", 24564, 1, 24563, 41, "550.54.15", 0),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def container(name: str, ports: str, project: str, service: str, state: str = "running",
              status: str = "Up 2 minutes (healthy)", image: str = "x") -> dict[str, object]:
    labels = f"com.docker.compose.project={project},com.docker.compose.service={service}"
    return {"Names": name, "Ports": ports, "Labels": labels, "State": state, "Status": status,
            "Image": image}


def by_check(results: list, check: str) -> list:
    return [r for r in results if r.check == check]


# --- versions, access, disk ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "minimum", "ok"),
    [("24.0.5", "20.10", True), ("20.10.24+dfsg1", "20.10", True), ("20.9.1", "20.10", False),
     ("v2.20.2", "2.20", True), ("2.19.9", "2.20", False), ("2", "2.0.0", True), ("", "1", False)],
)
def test_version_comparison(actual: str, minimum: str, ok: bool) -> None:
    assert checks.is_version_at_least(actual, minimum) is ok


def test_docker_without_access_fails_naming_the_user(project: Project) -> None:
    facts = healthy_facts(docker_server=None,
                          docker_error="permission denied while trying to connect (exit 1)")
    [res] = checks.check_docker(node(project, "starlord"), facts, "20.10")
    assert res.status == "fail" and res.node == "starlord"
    assert "swarm cannot use the docker engine: permission denied" in res.message
    assert "docker group" in (res.hint or "")


def test_old_docker_and_compose_fail(project: Project) -> None:
    starlord = node(project, "starlord")
    facts = healthy_facts(docker_server="19.03.1", compose="2.3.0")
    assert checks.check_docker(starlord, facts, "20.10")[0].status == "fail"
    res = checks.check_compose(starlord, facts, "2.20")
    assert res.status == "fail" and "2.3.0 is older than the minimum 2.20" in res.message
    missing = checks.check_compose(starlord, replace(facts, compose=None,
                                                     compose_error="'compose' is not a docker command"), "2.20")
    assert missing.status == "fail" and "compose v2 is not available" in missing.message


def test_disk_fails_under_the_floor_and_warns_under_declared_need(project: Project) -> None:
    starlord = node(project, "starlord")
    low = DiskFree(100 * GIB, GIB, "/")
    res = checks.check_disk(starlord, healthy_facts(disk_docker_root=low), 10)
    assert [r.status for r in res] == ["pass", "fail"]
    assert "docker data root /var/lib/docker" == res[1].subject
    some = DiskFree(100 * GIB, 50 * GIB, "/")
    res = checks.check_disk(starlord, healthy_facts(disk_deploy_root=some), 110)
    assert res[0].status == "warn" and "110 GB" in res[0].message


def test_ssh_failure_names_the_target(project: Project) -> None:
    res = checks.check_ssh(node(project, "thanos"), "connection refused")
    assert res.status == "fail" and "swarm@100.122.12.54:22" in res.message


# --- architecture and images -----------------------------------------------------------------


def test_arch_mismatch(project: Project) -> None:
    oracle = node(project, "oracle")
    assert checks.check_arch(oracle, healthy_facts(arch="aarch64")).status == "pass"
    res = checks.check_arch(oracle, healthy_facts(arch="x86_64"))
    assert res.status == "fail" and "x86_64 (amd64), the inventory says arm64" in res.message


def index_of(ref: str, *platforms: str) -> ImageIndex:
    digest = "sha256:" + "a" * 64
    manifests = tuple(PlatformManifest(Platform.of("linux", p), "sha256:" + "b" * 64, "m")
                      for p in platforms)
    return ImageIndex(parse_image_ref(ref), digest, "application/vnd.oci.image.index.v1+json",
                      manifests)


def test_image_without_the_nodes_platform_names_what_it_offers() -> None:
    ref = "198.18.0.1:5000/vllm/vllm-openai:v0.6.3"
    res = checks.check_image("oracle", ref, "linux/arm64", index_of(ref, "amd64"), ["open-webui"])
    assert res.status == "fail" and res.node == "oracle" and res.subject == ref
    assert "has no linux/arm64 variant" in res.message and "offers linux/amd64" in res.message
    ok = checks.check_image("oracle", ref, "linux/arm64", index_of(ref, "amd64", "arm64"), ["x"])
    assert ok.status == "pass" and "@sha256:" + "a" * 64 in ok.message


def test_unreadable_image_fails_with_the_registry_message() -> None:
    err = ServiceError("image x: repository x does not exist", hint="check the image name")
    res = checks.check_image("thanos", "x", "linux/amd64", err, ["a"])
    assert res.status == "fail" and "does not exist" in res.message and res.hint == "check the image name"


def test_smoke_runs_the_version_command_as_entrypoint_under_a_time_limit(tmp_path: Path) -> None:
    smoke = Smoke("r/vllm:1", "linux/amd64", ("python3", "-c", "import vllm"))
    argv = smoke.to_command().argv
    assert argv[:2] == ("sh", "-c") and argv[4:9] == ("30", "linux/amd64", "python3", "r/vllm:1", argv[8])
    assert argv[8].startswith("swarm-smoke-") and argv[9:] == ("-c", "import vllm")
    fake = tmp_path / "docker"  # records what the script runs
    fake.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run(argv, check=True, env=env)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "pull -q --platform linux/amd64 r/vllm:1"
    assert calls[1] == f"run --rm --name {argv[8]} --platform linux/amd64 --entrypoint python3 r/vllm:1 -c import vllm"
    step = StepResult(smoke.to_command(), 1, "", "exec format error\nRun 'docker run --help'\n")
    res = checks.check_smoke("oracle", "r/vllm:1", "linux/arm64", step)
    assert res.status == "fail" and "exec format error" in res.message
    hung = checks.check_smoke("oracle", "r/vllm:1", "linux/arm64", replace(step, exit_status=124))
    assert hung.status == "warn" and "still running after 30 s" in hung.message


# --- GPUs ------------------------------------------------------------------------------------


def test_hot_gpu_fails_at_the_node_limit(project: Project) -> None:
    starlord = node(project, "starlord")
    hot = healthy_facts(gpus=(GpuReading(0, "NVIDIA GeForce RTX 4090", 24564, 1, 24563, 90,
                                         "550.54.15", 0),))
    [thermal] = by_check(checks.check_gpus(starlord, hot, "535.0", []), "gpu-thermal")
    assert thermal.status == "fail" and thermal.node == "starlord"
    assert "90 °C, limit 85 °C" in thermal.message
    thanos = node(project, "thanos")
    warm = healthy_facts(gpus=(GpuReading(0, "NVIDIA GeForce RTX 3080", 10240, 1, 10239, 83,
                                          "550.54.15", 0),))
    [thermal] = by_check(checks.check_gpus(thanos, warm, None, []), "gpu-thermal")
    assert thermal.status == "fail" and "limit 83 °C" in thermal.message  # per-node override


def test_gpu_checks_all_pass_on_a_matching_card(project: Project) -> None:
    results = checks.check_gpus(node(project, "starlord"), healthy_facts(), "535.0", [])
    assert {r.check for r in results} == {"gpu", "gpu-runtime", "gpu-model", "gpu-vram",
                                         "gpu-thermal", "gpu-driver"}
    assert all(r.status == "pass" for r in results), results


def test_missing_nvidia_smi_and_runtime_fail(project: Project) -> None:
    starlord = node(project, "starlord")
    [res] = checks.check_gpus(starlord, healthy_facts(gpus=None, gpu_error="nvidia-smi not found"),
                              None, [])
    assert res.status == "fail" and "nvidia-smi not found" in res.message
    runtime = checks.check_runtime(starlord, healthy_facts(runtimes=("runc",)))
    assert runtime.status == "fail" and "nvidia-container-toolkit" in (runtime.hint or "")
    assert checks.check_gpus(node(project, "oracle"), healthy_facts(), None, []) == []


def test_free_vram_counts_only_instances_not_running_yet() -> None:
    reading = GpuReading(0, "RTX 4090", 24564, 20000, 4564, 50, "550", 0)
    needs = [checks.VramNeed("vllm-primary", 0, 14470, 12000, 24114, running=False),
             checks.VramNeed("vllm-secondary", 0, 7958, 6500, 24114, running=True)]
    res = checks.check_free_vram("starlord", reading, needs)
    assert res.status == "fail" and "4564 MiB free now" in res.message
    assert "vllm-primary claim 14470 MiB" in res.message and "vllm-secondary" not in res.message
    all_up = [replace(n, running=True) for n in needs]
    assert checks.check_free_vram("starlord", reading, all_up).status == "pass"
    roomy = replace(reading, memory_free_mib=14500)
    assert checks.check_free_vram("starlord", roomy, needs).status == "pass"


def thanos_needs(project: Project) -> list[checks.VramNeed]:
    """What the plan says thanos's vLLM will claim (phase 4), as preflight gets it."""
    return vram_needs(scope_for(project, 4))["thanos"]


def test_a_recorded_busy_card_fails_against_the_plans_claim(project: Project) -> None:
    """The recorded RTX 3080 (telegraf's nvidia-smi dump) has 660 MiB free: far below the
    0.85 x 9790 MiB vllm-backup claims, and below the least it could start with."""
    [reading] = parse_nvidia_smi((GPU_FIXTURES / "rtx3080-595.58.03.csv").read_text())
    [need] = thanos_needs(project)
    assert need.claim_mib == round(0.85 * (10240 - 450))
    res = checks.check_free_vram("thanos", reading, [need])
    assert res.status == "fail"
    assert "660 MiB free now" in res.message and f"claim {need.claim_mib} MiB" in res.message
    assert "stop what holds VRAM" in (res.hint or "") and "--query-compute-apps" in (res.hint or "")


def test_a_partly_used_card_is_told_the_utilization_that_still_starts(
    project: Project, project_copy: Path, edit_yaml
) -> None:
    """The same 3080 with a desktop session holding 2.7 GiB: 7500 MiB free cannot take the
    8322 MiB claim, but still holds one full-length sequence at a lower utilization."""
    [recorded] = parse_nvidia_smi((GPU_FIXTURES / "rtx3080-595.58.03.csv").read_text())
    reading = replace(recorded, memory_used_mib=2740, memory_free_mib=7500)
    [need] = thanos_needs(project)
    res = checks.check_free_vram("thanos", reading, [need])
    assert res.status == "fail"
    assert "lower vllm-backup's gpu_memory_utilization to 0.76" in (res.hint or "")
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update({"gpu_memory_utilization": 0.76}))
    at_076 = make_plan(load_project(project_copy))
    assert at_076.feasible, at_076.problems   # the hint is true: at 0.76 the plan starts


# --- ports and protected services -----------------------------------------------------------


def test_port_held_by_own_container_passes_and_by_a_foreign_one_fails(
    project: Project, services: dict[str, Service]
) -> None:
    starlord, primary = node(project, "starlord"), services["vllm-primary"]
    own = container("swarm-starlord-vllm-primary-1", "0.0.0.0:8000->8000/tcp, [::]:8000->8000/tcp",
                    "swarm-starlord", "vllm-primary")
    assert checks.check_port(starlord, primary, 8000, healthy_facts(containers=(own,))).status == "pass"
    foreign = {"Names": "squatter", "Ports": "0.0.0.0:8000->80/tcp", "Labels": "", "Image": "nginx"}
    res = checks.check_port(starlord, primary, 8000, healthy_facts(containers=(foreign,)))
    assert res.status == "fail" and res.node == "starlord"
    assert "taken by container squatter (image nginx)" in res.message and "docker rm -f squatter" in (res.hint or "")


def test_published_ports_read_docker_ranges() -> None:
    ranged = {"Ports": "0.0.0.0:6333-6334->6333-6334/tcp, :::6333-6334->6333-6334/tcp"}
    assert checks.published_ports(ranged) == {6333, 6334}
    assert checks.published_ports({"Ports": "8000/tcp"}) == set()  # exposed, not published


def test_port_held_by_a_process_outside_docker_fails(project: Project, services: dict[str, Service]) -> None:
    res = checks.check_port(node(project, "starlord"), services["vllm-primary"], 8000,
                            healthy_facts(listening=frozenset({22, 8000})))
    assert res.status == "fail" and "outside docker" in res.message
    unknown = checks.check_port(node(project, "starlord"), services["vllm-primary"], 8000,
                                healthy_facts(listening=None))
    assert unknown.status == "warn"


def qdrant_container(**kw: str) -> dict[str, object]:
    return container("swarm-starlord-qdrant-1", "0.0.0.0:6333->6333/tcp", "swarm-starlord",
                     "qdrant", **kw)


def test_protected_qdrant(project: Project, services: dict[str, Service]) -> None:
    starlord, qdrant = node(project, "starlord"), services["qdrant"]
    good = [Outcome(True, "GET :6333/collections expecting 200", "200")]
    facts = healthy_facts(containers=(qdrant_container(),))
    assert checks.check_protected(starlord, qdrant, facts, good).status == "pass"
    stopped = healthy_facts(containers=(qdrant_container(state="exited", status="Exited (0) 3 seconds ago"),))
    res = checks.check_protected(starlord, qdrant, stopped, [])
    assert res.status == "fail" and "swarm-starlord-qdrant-1 is exited" in res.message
    assert "docker start swarm-starlord-qdrant-1" in (res.hint or "")
    bad = [Outcome(False, "GET :6333/collections expecting 200", "connection refused or unreachable")]
    assert checks.check_protected(starlord, qdrant, facts, bad).status == "fail"


def test_protected_missing_is_a_warning_on_first_deploy_and_a_failure_after(
    project: Project, services: dict[str, Service]
) -> None:
    starlord, qdrant = node(project, "starlord"), services["qdrant"]
    first = checks.check_protected(starlord, qdrant, healthy_facts(), [])
    assert first.status == "warn" and "first deploy" in first.message
    deployed = healthy_facts(current={"id": "r1", "applied": {"qdrant": "h"}})
    gone = checks.check_protected(starlord, qdrant, deployed, [])
    assert gone.status == "fail" and "release r1" in gone.message


def test_adopted_protected_service_found_by_its_port(project: Project, services: dict[str, Service]) -> None:
    adopted = {"Names": "qdrant-old", "Ports": "0.0.0.0:6333->6333/tcp", "Labels": "",
               "State": "running", "Status": "Up 3 days"}
    facts = healthy_facts(containers=(adopted,))
    res = checks.check_protected(node(project, "starlord"), services["qdrant"], facts, [])
    assert res.status == "pass" and "qdrant-old" in res.message
    port = checks.check_port(node(project, "starlord"), services["qdrant"], 6333, facts)
    assert port.status == "pass"


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_report_names_never_values() -> None:
    needed = {"vllm_api_key": ["vllm-primary", "vllm-secondary"], "redis_password": ["redis"]}
    where = {"vllm_api_key": "secret/ai-swarm/vllm key api_key"}
    res = checks.check_secrets("starlord", needed, ["vllm_api_key"], where)
    assert [r.status for r in res] == ["fail", "pass"]
    assert res[0].subject == "vllm_api_key" and res[0].node == "starlord"
    assert "secret/ai-swarm/vllm key api_key" in res[0].message
    sealed = checks.check_secrets("starlord", needed, ServiceError("Vault is sealed"), where)
    assert sealed[0].status == "fail" and "Vault is sealed" in sealed[0].message
    assert checks.check_secrets("oracle", {}, [], {}) == []


# --- network ---------------------------------------------------------------------------------


def test_dependencies_come_from_rendered_configs_and_env(project: Project) -> None:
    everyone = build_services(project)
    fleet = render_fleet(project, for_node=True)
    deps = dependencies(fleet, everyone, everyone)
    pairs = {(d.source.name, d.target.name, d.port) for d in deps}
    for vllm, port in (("vllm-primary", 8000), ("vllm-secondary", 8001), ("vllm-backup", 8002)):
        assert ("haproxy", vllm, port) in pairs  # the front door's config names every vLLM
    assert ("gpt-researcher", "haproxy", 80) in pairs  # env OPENAI_BASE_URL: LiteLLM through the front door
    assert ("rag-pipeline", "qdrant", 6333) in pairs
    assert all(d.source.node != d.target.node for d in deps)


def test_dependencies_on_a_node_at_an_ipv6_address(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml", lambda d: d["nodes"]["starlord"].update(address="fd00::3"))
    moved = load_project(project_copy)
    everyone = build_services(moved)
    deps = dependencies(render_fleet(moved, for_node=True), everyone, everyone)
    found = {(d.source.name, d.target.name): d.endpoint for d in deps}
    # the front door's config and rag-pipeline's env write [fd00::3]:port; the probe targets say so too
    assert found[("haproxy", "vllm-primary")] == "[fd00::3]:8000"
    assert found[("rag-pipeline", "qdrant")] == "[fd00::3]:6333"


def probe_facts(**probes: str) -> NodeFacts:
    parsed = {t: p for t, p in ((t, parse_probe_line(f"{t} {line}")) for t, line in probes.items()) if p}
    return healthy_facts(probes=parsed)


def test_network_results(services: dict[str, Service]) -> None:
    gpt, litellm, vllm = services["gpt-researcher"], services["litellm"], services["vllm-backup"]
    dep = checks.Dependency(gpt, litellm, 4000)
    endpoint = dep.endpoint
    [ok] = checks.check_network("thanos", [dep], probe_facts(**{endpoint: "open"}))
    assert ok.status == "pass"
    [cut] = checks.check_network(
        "thanos", [dep], probe_facts(**{endpoint: "closed 1 bash: connect: No route to host"}))
    assert cut.status == "fail" and cut.node == "thanos"
    assert f"thanos cannot reach oracle at {endpoint}" in cut.message and "No route to host" in cut.message
    [hole] = checks.check_network("thanos", [dep], probe_facts(
        **{endpoint: "closed 1 bash: connect: Invalid argument bash: line 1: /dev/tcp/x/1: Invalid argument"}))
    assert hole.status == "fail" and "no route to host (blackholed)" in hole.message
    [untested] = checks.check_network(
        "thanos", [dep], probe_facts(**{endpoint: "closed 127 sh: 1: timeout: not found"}))
    assert untested.status == "warn" and "bash or timeout missing" in untested.message
    [slow] = checks.check_network("thanos", [dep], probe_facts(**{endpoint: "closed 124"}))
    assert slow.status == "fail" and "no answer within 3 s" in slow.message
    [down] = checks.check_network(
        "thanos", [dep], probe_facts(**{endpoint: "closed 1 bash: connect: Connection refused"}))
    assert down.status == "fail" and "phase 2" in down.message  # litellm should already run
    later = checks.Dependency(litellm, vllm, 8002)
    [early] = checks.check_network(
        "oracle", [later], probe_facts(**{later.endpoint: "closed 1 Connection refused"}))
    assert early.status == "warn" and "phase 4" in early.message
    router = replace(litellm, name="backup-router", node="overflow", phase=5)
    optional = checks.Dependency(services["prometheus"], router, 4000, optional=True)
    [absent] = checks.check_network("oracle", [optional], probe_facts(**{optional.endpoint: "closed 124"}))
    assert absent.status == "warn" and "optional backup-router" in absent.message


def test_a_dependency_the_deploy_brings_up_itself_is_not_a_failure(services: dict[str, Service]) -> None:
    """Phases 3 and 4 in one run on a fresh fleet: thanos needs starlord's Qdrant, which
    phase 3 of the same run brings up — refused now is expected; a routing problem is not."""
    rag, qdrant = services["rag-pipeline"], services["qdrant"]
    coming = checks.Dependency(rag, qdrant, 6333, coming=True)
    [soon] = checks.check_network("thanos", [coming], probe_facts(**{coming.endpoint: "closed 1 Connection refused"}))
    assert soon.status == "warn" and "this deploy brings it up" in soon.message
    [cut] = checks.check_network("thanos", [coming], probe_facts(**{coming.endpoint: "closed 1 No route to host"}))
    assert cut.status == "fail"


def test_services_of_optional_phases_and_nodes_are_optional(project: Project) -> None:
    from orchestrator.preflight.scope import optional_services

    found = optional_services(project, build_services(project))
    assert {"backup-router", "redis-cache"} <= found and "litellm" not in found


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probe_script_runs_for_real_in_one_command(listener: int, tmp_path: Path) -> None:
    closed = free_port()
    request = FactsRequest(deploy_root=str(tmp_path / "not" / "yet"),
                           targets=(f"127.0.0.1:{listener}", f"127.0.0.1:{closed}"))
    transport = LocalTransport()
    answer = asyncio.run(transport.run(probe_script(request), check=False))
    assert transport.stats.commands == 1
    facts = parse_facts(request, answer.steps, "local")
    assert facts.arch and facts.disk_deploy_root is not None  # df of the nearest parent
    assert facts.probes[f"127.0.0.1:{listener}"].open
    refused = facts.probes[f"127.0.0.1:{closed}"]
    assert not refused.open and refused.refused


def test_probe_script_reaches_an_ipv6_target_written_in_brackets(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        sock.listen()
        target = f"[::1]:{sock.getsockname()[1]}"
        request = FactsRequest(deploy_root=str(tmp_path), targets=(target,))
        answer = asyncio.run(LocalTransport().run(probe_script(request), check=False))
    assert parse_facts(request, answer.steps, "local").probes[target].open


def test_parse_facts_reads_docker_answers() -> None:
    request = FactsRequest("/opt/ai-swarm", gpus=True)
    script = probe_script(request)
    info = {"ServerVersion": "24.0.5", "DockerRootDir": "/var/lib/docker",
            "Runtimes": {"runc": {}, "nvidia": {}}}
    outs = ["x86_64\n", json.dumps({"Client": {"Version": "24.0.5"}, "Server": {"Version": "24.0.5"}}),
            "2.27.0\n", json.dumps(info), "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
            "/dev/vda 1000 10 990 1% /\n", "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
            "/dev/vda 1000 10 990 1% /\n", "LISTEN 0 4096 0.0.0.0:22 0.0.0.0:*\n", "",
            "swarm:missing\n", "0, NVIDIA GeForce RTX 4090, 24564, 1, 24563, 41, 550.54.15, 0\n",
            (GPU_FIXTURES / "smi-550.54.15-v100.txt").read_text()]
    steps = [StepResult(c, 0, o, "") for c, o in zip(script.commands, outs, strict=True)]
    facts = parse_facts(request, steps, "starlord")
    assert facts.docker_server == "24.0.5" and facts.compose == "2.27.0"
    assert facts.runtimes == ("nvidia", "runc") and facts.listening == {22}
    assert facts.gpus is not None and facts.gpus[0].temperature_c == 41 and facts.current is None
    assert facts.cuda_version == "12.4"
    missing = StepResult(script.commands[-2], 127, "", "sh: nvidia-smi: not found")
    no_smi = steps[:-2] + [missing, StepResult(script.commands[-1], 127, "", "sh: nvidia-smi: not found")]
    assert parse_facts(request, no_smi, "starlord").gpu_error == "nvidia-smi not found"


def test_probe_script_is_read_only_without_smoke() -> None:
    assert not probe_script(FactsRequest("/opt/ai-swarm", gpus=True, targets=("h:1",))).mutates
    smoke = Smoke("img", "linux/amd64", ("v",))
    assert probe_script(FactsRequest("/opt/ai-swarm", smokes=(smoke,))).mutates


def test_hostile_targets_stay_data(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    request = FactsRequest(str(tmp_path), targets=(f"$(touch {marker}):1", f"x;touch {marker}:2"))
    answer = asyncio.run(LocalTransport().run(probe_script(request), check=False))
    parse_facts(request, answer.steps, "local")
    assert not marker.exists()


# --- scope and the deploy gate ------------------------------------------------------------------


def scope_for(project: Project, phase: int | None, limit: str | None = None) -> Scope:
    """What `swarm preflight [--phase N] [--limit L]` checks: the run selection's scope."""
    ids = checked_phases(project, None if phase is None else (phase,))
    return select(project, ids, limit).preflight_scope()


def test_the_scope_is_the_run_selection_with_its_optional_nodes(project: Project) -> None:
    """One optional-node rule: overflow (optional: true) is in the scope, marked optional — a
    preflight gives it a short connect window and names it when it is off."""
    everything = scope_for(project, None)
    assert {n.name for n in everything.nodes} == {"oracle", "starlord", "thanos", "overflow"}
    assert everything.optional == frozenset({"overflow"})
    assert "redis-cache" in {s.name for s in everything.services}
    phase5 = scope_for(project, 5)
    assert [n.name for n in phase5.nodes] == ["overflow"]
    assert scope_for(project, 0).nodes == everything.nodes  # phase 0, validation, checks every phase
    limited = scope_for(project, 4, "thanos")
    assert {s.node for s in limited.services} == {"thanos"}


def test_an_optional_node_that_is_off_is_named_never_probed(project: Project) -> None:
    """oracle's Prometheus scrapes overflow's backup-router: with overflow off, oracle is not
    asked to connect to it (that waited 3 s per preflight), and the check says why."""
    scope = scope_for(project, None).without(["overflow"])
    requests = plan_requests(project, scope)
    assert not any(t.startswith(f"{project.inventory.node('overflow').address}:")
                   for t in requests.by_node["oracle"].targets)
    dep = next(d for d in requests.deps if d.target.node == "overflow")
    result = checks.check_network("oracle", [dep], NodeFacts())
    assert result[0].status == "warn" and "optional overflow is off" in result[0].message


def test_require_passed_lists_every_failure() -> None:
    from orchestrator.preflight.report import CheckResult

    ok = Report.of([CheckResult("port", "8000/tcp", "starlord", "warn", "meh")])
    require_passed(ok)
    bad = Report.of([CheckResult("gpu-thermal", "GPU 0", "starlord", "fail", "90 °C", "cool it"),
                     CheckResult("port", "8000/tcp", "starlord", "fail", "taken")])
    with pytest.raises(Exception) as info:
        require_passed(bad)
    assert "2 check(s) failed" in str(info.value) and "starlord: gpu-thermal GPU 0: 90 °C" in str(info.value)
    assert info.value.exit_code == 1  # type: ignore[attr-defined]


def test_command_argv_never_contains_formatted_data() -> None:
    script = probe_script(FactsRequest("/opt/x y", targets=("1.2.3.4:5",)))
    assert Command(("sh", "-c", "true"), mutates=False)  # sanity
    assert any("/opt/x y" in c.argv for c in script.commands)  # passed as its own argument
