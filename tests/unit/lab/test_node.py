"""Rendering of a node's sshd_config, init script and tools."""

from __future__ import annotations

from pathlib import Path

from orchestrator.lab import layout, node


def _spec(name: str) -> layout.NodeSpec:
    return layout.parse_nodes_option(name, light=False)[0]


def test_sshd_config_is_key_only_on_the_node_address(tmp_path: Path) -> None:
    text = node.render_sshd_config(_spec("starlord"), tmp_path)
    lines = set(text.splitlines())
    assert "ListenAddress 198.18.1.2" in lines
    assert f"HostKey {tmp_path / 'ssh_host_ed25519_key'}" in lines
    assert {"PasswordAuthentication no", "UsePAM no", "MaxStartups 100:30:200",
            "PermitRootLogin no", "AllowUsers swarm"} <= lines
    assert "DOCKER_DEFAULT_PLATFORM" not in text


def test_arm64_node_defaults_docker_to_arm64(tmp_path: Path) -> None:
    text = node.render_sshd_config(_spec("oracle"), tmp_path)
    assert "SetEnv DOCKER_DEFAULT_PLATFORM=linux/arm64" in text.splitlines()
    assert "uname" in node.node_tools(_spec("oracle"))


def test_dockerd_flags_keep_docker_in_lab_ranges(tmp_path: Path) -> None:
    argv = node.dockerd_argv(_spec("thanos"), tmp_path)
    assert argv[argv.index("--bip") + 1] == "198.19.3.1/24"
    assert argv[argv.index("--default-address-pool") + 1] == "base=198.19.72.0/22,size=26"
    assert argv[argv.index("--insecure-registry") + 1] == "198.18.0.1:5000"
    assert any(a.startswith("nvidia=") for a in argv)  # GPU node: nvidia runtime alias


def test_init_script_quotes_paths_and_execs_sshd(tmp_path: Path) -> None:
    odd = tmp_path / "dir with space; $(x)"
    text = node.render_init(_spec("oracle"), odd)
    assert "hostname oracle" in text
    assert f"'{odd}/opt'" in text  # quoted, never expanded
    assert text.rstrip().splitlines()[-1].startswith("exec /usr/sbin/sshd -D")
    assert "dockerd" in text


def test_light_node_has_no_dockerd(tmp_path: Path) -> None:
    spec = layout.parse_nodes_option("2", light=True)[0]
    assert "dockerd " not in node.render_init(spec, tmp_path / "n")
    assert node.node_tools(spec) == {}
