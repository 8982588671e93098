"""Whatever an operator writes in the inventory, swarm answers with an input error, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli.main import main
from orchestrator.config.inventory import load_inventory
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[3]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100000), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["amd64", "arm64", "24GB", "", "~", "all"]))
keys = st.sampled_from(["nodes", "groups", "ssh", "vars", "address", "arch", "gpus", "vram_mib", "model",
                        "hosts", "port", "user", "registry", "mirror", "protected", "services", "ram_gb",
                        "oracle", "starlord", "network", "subnet", "keep_releases", "x"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                      max_leaves=25)
documents = st.dictionaries(keys, values, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_garbage_is_input_error(doc: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inv.yml"
        path.write_text(yaml.safe_dump(doc))
        try:
            load_inventory(path)
        except InputError as exc:
            assert str(path) in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_input_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inv.yml"
        path.write_text(text, encoding="utf-8")
        try:
            load_inventory(path)
        except InputError:
            pass


@settings(max_examples=40, deadline=None)
@given(documents)
def test_cli_exits_2_and_prints_no_traceback(doc: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inv.yml"
        path.write_text(yaml.safe_dump(doc))
        result = CliRunner().invoke(main, ["--project", str(REPO), "plan", "-i", str(path)])
        assert result.exit_code in (0, 2), result.output
        assert "Traceback" not in result.output
        assert "internal error" not in result.output
