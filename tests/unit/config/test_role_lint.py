"""A role cannot put a secret on a command line; settings it declares are checked by form."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.config.roles import load_role
from orchestrator.config.settings import SettingSpec, infer
from orchestrator.errors import InputError


def role(tmp_path: Path, **fields: object) -> Path:
    body = {"image": {"name": "busybox:1"}, "user": "1000:1000", "secret_env": {"PASSWORD": "pw"}, **fields}
    (tmp_path / "r").mkdir()
    (tmp_path / "r/role.yml").write_text(yaml.safe_dump(body))
    return tmp_path


@pytest.mark.parametrize("command", [
    ["sh", "-c", "exec server --password=$$PASSWORD"],
    ["sh", "-c", 'exec server -p "$${PASSWORD}"'],
    ["server", "--password", "$$PASSWORD"],
])
def test_secret_expanded_into_arguments_is_refused(tmp_path: Path, command: list[str]) -> None:
    with pytest.raises(InputError, match=r"command\[\d\]: expands secret_env PASSWORD into a command line") as err:
        load_role(role(tmp_path, command=command), "r")
    assert "r/role.yml:" in str(err.value)


@pytest.mark.parametrize("command", [
    ["sh", "-c", 'PGPASSWORD="$$PASSWORD" exec psql -h db'],            # the program's environment
    ["sh", "-c", "export TOKEN=$$PASSWORD; exec server"],
    ["sh", "-c", 'exec server - <<EOF\nrequirepass "$$PASSWORD"\nEOF\n'],  # the program's stdin
    ["sh", "-c", "exec server --password-file /run/pw"],
])
def test_environment_and_stdin_are_allowed(tmp_path: Path, command: list[str]) -> None:
    assert load_role(role(tmp_path, command=command), "r").spec.command == command


def test_healthcheck_is_linted_too(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"healthcheck.test\[0\]"):
        load_role(role(tmp_path, healthcheck={"test": ['cli -a "$$PASSWORD" ping'], "shell": True}), "r")


def test_declared_default_must_have_its_declared_form(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"defaults.ratio: expected at most 1, got 2"):
        load_role(role(tmp_path, defaults={"ratio": 2}, settings={"ratio": {"type": "number", "max": 1}}), "r")


@pytest.mark.parametrize(("name", "default", "value", "problem"), [
    ("port", 80, True, "expected a port number 1..65535, got True"),
    ("http_port", 80, 0, "expected a port number"),
    ("workers", 2, "two", "expected a whole number"),
    ("enabled", False, 1, "expected true or false"),
    ("ratio", 0.5, float("inf"), "expected a finite number"),
    ("name", "x", ["a"], "expected text"),
])
def test_form_inferred_from_the_default(name: str, default: object, value: object, problem: str) -> None:
    spec = infer(name, default)
    assert spec.problem(default) is None
    assert problem in (spec.problem(value) or "")


def test_allowed_values_do_not_confuse_booleans_and_numbers() -> None:
    spec = SettingSpec(values=[1, "auto"])
    assert spec.problem(1) is None and spec.problem("auto") is None
    assert "expected one of: 1, auto" in (spec.problem(True) or "")
