"""The tree's limits: no module over 500 lines, no function over 80, and CONTRIBUTING.md's table lists every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for pkg in ("medr1_data", "medr1_train") for p in (ROOT / pkg).rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {source.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_contributing_lists_every_module() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    missing = [
        str(p.relative_to(ROOT))
        for p in MODULES
        if p.name != "__init__.py" or p.parent.name in ("teacher", "export")
        if f"`{p.relative_to(ROOT).as_posix()}`" not in text
        and f"`{p.relative_to(ROOT).parent.as_posix()}/`" not in text
    ]
    assert not missing, f"CONTRIBUTING.md's layout table lacks: {', '.join(missing)}"
