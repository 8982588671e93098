"""Docs that stay true: every file, folder and module the README, docs/ and the package's own
docstrings name (in `backticks`) exists, and every `orchestrator.x.y.name` names something
defined there. A rename that leaves a doc behind fails here, not in a reader's hands."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "orchestrator"
TOKEN = re.compile(r"`([^`\s]+)`")
DOTTED = re.compile(r"orchestrator(\.[A-Za-z_]\w*)+")
FILE = re.compile(r"[\w.-]+(/[\w.-]+)*/?")
# a path is the repository's when it starts at one of its folders (or a package folder):
# node-side paths (`current/release.json`), Vault mounts (`secret/`) and the like are not
ROOTS = ({p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")}
         | {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")} | {"standins"})


def documents() -> Iterator[tuple[Path, str]]:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(REPO.glob("*/README.md")),
                 *sorted(REPO.glob("tests/*/README.md"))]:
        yield path, path.read_text()
    for path in sorted(PACKAGE.rglob("*.py")):
        if "standins" not in path.parts:
            yield path, ast.get_docstring(ast.parse(path.read_text())) or ""


def named(text: str) -> Iterator[str]:
    for match in TOKEN.finditer(text):
        token = match.group(1).rstrip(".,:;)")
        if not token.startswith(("/", "~", "$", "-", "http")) and not set(token) & set("<>{}*[]=|$"):
            yield token


def exists(token: str, where: Path) -> bool | None:
    """Whether what the token names exists; None when it is not a name of this repository."""
    if DOTTED.fullmatch(token):
        return _dotted(token)
    first = token.split("/", 1)[0]
    if "/" not in token or not FILE.fullmatch(token) or (first not in ROOTS and not token.endswith(".py")):
        return None
    bases = (REPO, PACKAGE, PACKAGE / "lab", where.parent)
    if any((base / token).exists() for base in bases):
        return True
    module, _, name = token.rpartition(".")  # `engine/deploy.deploy`: a name in a module
    return bool(name) and any((base / f"{module}.py").is_file() and _defines(base / f"{module}.py", name)
                              for base in bases)


def _dotted(token: str) -> bool:
    parts = token.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[cut:]
            return not rest or _defines(module, rest[0])
    return False


def _defines(module: Path, name: str) -> bool:
    text = module.read_text()
    return re.search(rf"^(async def|def|class) {re.escape(name)}\b|^{re.escape(name)}\s*[:=]", text, re.M) is not None


CASES = [(path, token) for path, text in documents() for token in named(text)]


def test_the_docs_name_something() -> None:
    assert sum(1 for path, token in CASES if exists(token, path) is not None) > 60


@pytest.mark.parametrize(("path", "token"), [c for c in CASES if exists(c[1], c[0]) is not None],
                         ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v)
def test_every_path_and_module_the_docs_name_exists(path: Path, token: str) -> None:
    assert exists(token, path), f"{path.relative_to(REPO)} names `{token}`, which does not exist"
