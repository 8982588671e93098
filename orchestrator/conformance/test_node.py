"""Per node: the current release is what `swarm render` gives now, files and the host are safe."""

from __future__ import annotations

from orchestrator.config.inventory import Node
from orchestrator.conformance import checks
from orchestrator.conformance.hosts import host_spec, password_auth_offered
from orchestrator.conformance.plugin import Conformance
from orchestrator.render.pins import recorded_images, recorded_models, release_compose
from orchestrator.render.release import APPLIED_FILE, RELEASE_FILE, env_file_body, service_hash


def explain(problems: list[str]) -> str:
    return "; ".join(problems)


def test_current_release(swarm: Conformance, node: Node) -> None:
    facts = swarm.facts(node.name, "current", "release")
    problems = checks.release_problems(facts.current_target, facts.release)
    assert not problems, explain(problems)


def test_release_files_match_render(swarm: Conformance, node: Node) -> None:
    """The release's files are the render's, its compose naming each image by the digest and each
    moving weights revision by the commit the release records (the deploy pins them: render/pins.py)."""
    files = swarm.scope.render.nodes[node.name].files
    release = swarm.facts(node.name, "release").release
    pinned = release_compose(files["compose.yml"], swarm.scope.playbook_services_on(node.name),
                             recorded_images(release), recorded_models(release),
                             lambda _node: node.deploy_root) if "compose.yml" in files else b""
    expected = {**files, "compose.yml": pinned} if "compose.yml" in files else files
    problems = checks.file_drift(expected, swarm.facts(node.name, "hashes").hashes, "current",
                                 ignore=[RELEASE_FILE, APPLIED_FILE])  # both written by the deploy
    assert not problems, explain(problems)


def test_config_store_matches_render(swarm: Conformance, node: Node) -> None:
    expected = swarm.scope.render.nodes[node.name].store
    problems = checks.file_drift(expected, swarm.facts(node.name, "store").store_hashes, node.deploy_root)
    assert not problems, explain(problems)


def test_applied_definitions_match_render(swarm: Conformance, node: Node) -> None:
    secrets = swarm.secrets()
    expected = {s.name: service_hash(s, env_file_body(s, secrets) if s.secret_env else b"")
                for s in swarm.scope.services_on(node.name)}
    release = swarm.facts(node.name, "release").release or {}
    problems = checks.applied_problems(release.get("applied") or {}, expected)
    assert not problems, explain(problems)


def test_env_files_private(swarm: Conformance, node: Node) -> None:
    services = [s.name for s in swarm.scope.services_on(node.name) if s.secret_env]
    problems = checks.env_file_problems(services, swarm.facts(node.name, "files").files, node.ssh.user)
    assert not problems, explain(problems)


def test_no_unknown_listeners(swarm: Conformance, node: Node) -> None:
    known = {p.port for s in swarm.scope.playbook_services_on(node.name) for p in s.ports}
    known.add(node.ssh.port)
    problems = checks.unknown_listeners(swarm.facts(node.name, "listeners").listeners, node.address, known)
    assert not problems, explain(problems)


def test_no_foreign_containers(swarm: Conformance, node: Node) -> None:
    services = {s.name for s in swarm.scope.playbook_services_on(node.name)}
    problems = checks.foreign_containers(swarm.facts(node.name, "containers").containers, node.project, services)
    assert not problems, explain(problems)


def test_no_secret_file_readable_by_others(swarm: Conformance, node: Node) -> None:
    problems = checks.secret_file_problems(swarm.facts(node.name, "secret_files").secret_files)
    assert not problems, explain(problems)


def test_docker_socket_not_world_writable(swarm: Conformance, node: Node) -> None:
    problems = checks.socket_problems(swarm.facts(node.name).socket_stat)
    assert not problems, explain(problems)


def test_sshd_refuses_passwords(swarm: Conformance, node: Node) -> None:
    offered = password_auth_offered(host_spec(swarm.project.inventory, node))
    assert not offered, f"sshd on {node.address} offers {', '.join(sorted(offered))} login"


def test_nvidia_runtime(swarm: Conformance, gpu_node: Node) -> None:
    problems = checks.runtime_problems(swarm.facts(gpu_node.name, "runtimes").runtimes)
    assert not problems, explain(problems)


def test_gpu_temperature(swarm: Conformance, gpu_node: Node) -> None:
    facts = swarm.facts(gpu_node.name, "gpus")
    problems = checks.thermal_problems(facts.gpus, gpu_node.thermal_limit_c, len(gpu_node.gpus))
    assert not problems, explain(problems)
