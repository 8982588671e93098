"""Values stay values in the front door's config: every string an inventory can give that lands
in roles/haproxy's files (haproxy.cfg, hold.lua) is either refused (exit 2, naming the file and
the key) or written so that `haproxy -c` accepts the file and it holds exactly the directives it
holds without the value — a newline, a `#`, a quote never start a directive of their own."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.fleet import render_fleet
from orchestrator.render.templates import jinja_env
from orchestrator.render.validate import check_rendered

INV = "inventory/swarm.yml"
CFG = "config/haproxy/haproxy.cfg"
HOSTILE = ["x\n    server evil 203.0.113.9:80", "x # y", "x'y", 'x"y']


def _service(node: str, service: str, key: str, value: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["nodes"][node].setdefault("services", {}).setdefault(service, {})[key] = value
    return edit


def _fleet(value: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["fleet"] = value
    return edit


# (what, inventory edit, the key an error must name): every string setting haproxy takes, the
# strings of other services that reach its config (a vLLM's served model name, via the front
# door's table) and the fleet's name (the config's first comment).
CASES: list[tuple[str, Callable[[Any], Callable[[dict], None]], str]] = [
    ("hard_stop_after", lambda v: _service("oracle", "haproxy", "hard_stop_after", v), "hard_stop_after"),
    ("stats_reach", lambda v: _service("oracle", "haproxy", "stats_reach", v), "stats_reach"),
    ("tls_cert_dir", lambda v: _service("oracle", "haproxy", "tls_cert_dir", "/etc/" + v), "tls_cert_dir"),
    ("allowed_ips", lambda v: _service("oracle", "haproxy", "allowed_ips", ["10.0.0.0/8", v]), "allowed_ips"),
    ("image_tag", lambda v: _service("oracle", "haproxy", "image_tag", v), "image_tag"),
    ("served_model_name", lambda v: _service("starlord", "vllm-primary", "served_model_name", v),
     "served_model_name"),
    ("fleet", _fleet, "fleet"),
]


def _directives(text: str) -> list[str]:
    """Each directive line's text, comments and blank lines left out."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("value", HOSTILE, ids=["newline-server", "hash", "single-quote", "double-quote"])
@pytest.mark.parametrize(("what", "edit", "key"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_value_is_refused_naming_the_file_and_key(project_copy: Path, edit_yaml: Callable[..., None],
                                                           what: str, value: str, key: str,
                                                           edit: Callable[[Any], Callable[[dict], None]]) -> None:
    """Every string the role's config takes is typed (a pattern, a list of values, an address,
    a path, a name): none of these is one, so each is exit 2 before anything is written."""
    edit_yaml(project_copy / INV, edit(value))
    with pytest.raises(InputError) as err:
        render_fleet(load_project(project_copy))
    message = str(err.value)
    assert f"{project_copy / INV}:" in message and key in message, message


def _oracle_config(root: Path, model: str, edit_yaml: Callable[..., None]) -> str:
    edit_yaml(root / INV, _service("starlord", "vllm-primary", "served_model_name", model))
    project = load_project(root)
    fleet = render_fleet(project)
    check_rendered(project, fleet)  # haproxy -c accepts it
    return fleet.nodes["oracle"].files[CFG].decode()


def test_a_model_name_with_every_character_it_may_hold_stays_one_word(
        project_copy: Path, edit_yaml: Callable[..., None]) -> None:
    name = "Org_1/Model-7B.v2:latest"
    plain = sorted(d.split()[0] for d in _directives(_oracle_config(project_copy, "plainname", edit_yaml)))
    text = _oracle_config(project_copy, name, edit_yaml)
    assert sorted(d.split()[0] for d in _directives(text)) == plain  # no directive came or went (order: by name)
    assert f"-m str '{name}'" in text  # the body's model compared as the one word given


# ---------------------------------------------------------------- the `| haproxy` filter itself

HAPROXY = shutil.which("haproxy")
WORDS = st.text(alphabet=st.sampled_from(list("aZ09 #'\"\\$%{}[]:/.;,-_\tégx\n")), max_size=24)
READ_BACK = re.compile(r"config : parsing \[[^\]]+\]: '\[(.*)\]'\.$", re.S)


def _haproxy_reads(word: str) -> tuple[int, str]:
    """What HAProxy makes of `setenv V <word>`: its exit code with `-c`, and V as it reads it."""
    text = f"global\n    setenv SWARM_V {word}\n.notice \"[${{SWARM_V}}]\"\ndefaults\n    mode http\n" \
           "frontend f\n    bind :8080\n"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "h.cfg").write_text(text)
        done = subprocess.run([HAPROXY or "haproxy", "-c", "-f", f"{tmp}/h.cfg"], capture_output=True, text=True,
                              timeout=30, env={"PATH": "/usr/bin:/usr/sbin", "HOME": "/nonexistent"})
    notice = next((line for line in (done.stdout + done.stderr).splitlines() if "[NOTICE]" in line), "")
    found = READ_BACK.search(notice)
    return done.returncode, found.group(1) if found else f"<no notice in {done.stdout + done.stderr!r}>"


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WORDS)
def test_haproxy_reads_back_exactly_the_word_the_filter_writes(value: str) -> None:
    template = jinja_env().from_string("{{ v | haproxy }}")
    try:
        word = template.render(v=value)
    except SecurityError:  # what haproxy.cfg cannot carry: a control character
        assert any(not c.isprintable() for c in value)
        return
    assert "\n" not in word
    assume(value != "")  # HAProxy's setenv needs a value
    code, seen = _haproxy_reads(word)
    assert code == 0 and seen == value, (word, seen)
