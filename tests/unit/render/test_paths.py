"""Paths stay inside their roots: `render --out` and the rendered tree never write elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.fleet import output_dir, render_fleet, write_tree

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("out", ["", " ", "a\nb"])
def test_render_out_must_name_a_directory(out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--project", str(REPO), "render", "--out", out])
    assert result.exit_code == 2, result.output
    assert "--out: expected a directory" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


def test_render_out_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    result = CliRunner().invoke(main, ["--project", str(REPO), "render", "--out", str(target)])
    assert result.exit_code == 2 and "is not a directory" in result.output
    assert target.read_text() == "keep me"


def test_output_dir_defaults_and_accepts_a_new_directory(tmp_path: Path) -> None:
    assert output_dir(None, tmp_path / "compose") == tmp_path / "compose"
    assert output_dir(str(tmp_path / "new"), tmp_path) == tmp_path / "new"


def test_write_tree_refuses_a_symlink_that_leads_outside(tmp_path: Path) -> None:
    fleet = render_fleet(load_project(REPO))
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "oracle").symlink_to(outside)
    with pytest.raises(InputError, match="leads outside"):
        write_tree(fleet, out)
    assert list(outside.iterdir()) == []


def test_write_tree_writes_only_under_its_directory(tmp_path: Path) -> None:
    fleet = render_fleet(load_project(REPO))
    written = write_tree(fleet, tmp_path / "out")
    assert written and all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
