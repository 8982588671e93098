"""Property tests over inventories, playbooks, roles and command-line options (hypothesis,
bounded): whatever is changed, `plan` and `render` exit 0 or 2 with a message, never an
internal error or a traceback, write nothing outside the output directory, and no template
has a side effect.

The real-tool checks (haproxy, promtool, compose) are skipped here for speed; they have
their own tests. LiteLLM's licence-only allowed_ips is taken out of the copy so that a
clean project renders (tests/unit/render/test_validate.py covers that check).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[3]
FILES = ["inventory/swarm.yml", "playbooks/ai-swarm.yml", "roles/vllm/role.yml", "roles/redis/role.yml",
         "roles/haproxy/role.yml", "roles/grafana/role.yml"]
LICENSED = "  allowed_ips:\n{% for ip in allowed_ips %}\n    - {{ ip }}\n{% endfor %}\n"
CANARY = "SIDE_EFFECT"
BOUNDED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_text = st.sampled_from([
    "", " ", "\n", "x\n", "../../etc/passwd", "/etc/passwd", "-oProxyCommand=id", "1.2.3.4;id", "$(id)",
    "`id`", "a b", "0", "022", "1e999", "nan", "yes", "{{ 1 // 0 }}", "{{ no_such }}", "{% include 'x' %}",
    f"{{{{ lipsum.__globals__['os'].popen('touch {CANARY}').read() }}}}",
    f"{{{{ cycler.__init__.__globals__.os.system('touch {CANARY}') }}}}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ 'x' * 10**8 }}", "{{ range(10**9) | list }}",
    "x" * 300, "é✓\u2028", "\x00", "{{ port + 1 }}", "{{ node.address }}",
])
scalars = st.one_of(hostile_text, st.text(max_size=20), st.integers(-(2**70), 2**70), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3), max_leaves=6)


@contextmanager
def project() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        for part in ("inventory", "playbooks", "roles"):
            shutil.copytree(REPO / part, root / part)
        tpl = root / "roles/litellm/config.yaml.j2"
        tpl.write_text(tpl.read_text().replace(LICENSED, ""))
        yield root


def paths_in(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths_in(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths_in(v, (*prefix, i))
    return out


def mutate(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def run(root: Path, *args: str) -> tuple[int, str]:
    env = {"SWARM_SKIP_VALIDATORS": "compose,haproxy,promtool"}
    result = CliRunner().invoke(main, ["--project", str(root), *args], env=env, catch_exceptions=True)
    output = result.output + (repr(result.exception) if result.exception and result.exit_code not in (0, 1, 2) else "")
    return result.exit_code, output


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_clean_answer(code: int, output: str) -> None:
    assert code in (0, 2), output
    assert "internal error" not in output and "Traceback" not in output, output


@BOUNDED
@given(st.sampled_from(FILES), st.data(), values, st.booleans())
def test_any_single_change_is_answered_with_0_or_2(file: str, data: st.DataObject, value: Any, delete: bool) -> None:
    with project() as root:
        path = root / file
        doc = yaml.safe_load(path.read_text())
        target = data.draw(st.sampled_from(paths_in(doc)), label="path")
        mutate(doc, target, value, delete)
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        before = listing(root.parent)
        cwd = os.getcwd()
        os.chdir(root.parent)
        try:
            for args in (("plan",), ("render", "--out", str(root.parent / "out"))):
                assert_clean_answer(*run(root, *args))
        finally:
            os.chdir(cwd)
        after = listing(root.parent)
        new = {p for p in after - before if not p.startswith("out")}
        assert not new, f"written outside the output directory: {sorted(new)[:5]}"
        assert not any(CANARY in p for p in after)


@BOUNDED
@given(st.text(max_size=12), st.text(max_size=12))
def test_raw_text_anywhere_in_the_inventory(prefix: str, suffix: str) -> None:
    with project() as root:
        path = root / "inventory/swarm.yml"
        path.write_text(prefix + path.read_text() + suffix)
        assert_clean_answer(*run(root, "plan"))


options = st.one_of(st.integers(-5, 300).map(str), hostile_text)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["plan --phase", "render --out", "vault init --shares", "vault init --threshold",
                        "vault init --key-file"]), options)
def test_command_line_options(command: str, value: str) -> None:
    with project() as root, socket.socket() as closed:
        args = [*command.split(), value]
        vault = args[:2] == ["vault", "init"]
        if vault:
            # valid options (`--shares 1`) do reach Vault: the copy's Vault is a local port that
            # refuses, never the inventory's tailnet address (no traffic leaves the machine)
            closed.bind(("127.0.0.1", 0))
            local = f"http://127.0.0.1:{closed.getsockname()[1]}"
            inventory = root / "inventory/swarm.yml"
            doc = yaml.safe_load(inventory.read_text())
            doc["vault"]["addr"] = doc["consul"]["addr"] = local
            inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        if vault and "--key-file" not in args:
            args += ["--key-file", str(root / "keys.json")]
        if vault and args[2] != "--shares":
            args += ["--shares", "0"]  # one bad option at least: never reaches Vault
        if args[0] == "render" and value.strip() and "\x00" not in value:
            args[2] = str(root.parent / "out" / value.lstrip("/"))
        before = listing(root.parent)
        code, output = run(root, *args)
        if vault and code == 1:  # the options were good: Vault is not there, and the error says so
            assert f"Vault at {local} is unreachable" in output and "Traceback" not in output, output
        else:
            assert_clean_answer(code, output)
        new = {p for p in listing(root.parent) - before if not p.startswith("out")}
        assert not new, sorted(new)[:5]
