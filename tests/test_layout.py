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


def test_ci_without_the_shared_data_fails_instead_of_skipping(tmp_path: Path) -> None:
    """Under CI=true a missing ../shared is a failure with a clear message, not a silent skip."""
    import os
    import subprocess
    import sys

    test = tmp_path / "test_probe.py"
    test.write_text(
        "import tests.conftest as c\nfrom pathlib import Path\n"
        f"c.SHARED_DATA = Path({str(tmp_path / 'nowhere')!r})\n"
        "def test_probe():\n    c.require_shared('traces')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for ci, outcome in (("true", "1 failed"), ("", "1 skipped")):
        env["CI"] = ci
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test)],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert outcome in run.stdout, run.stdout
        if ci:
            assert "CI=true but the real reference data is missing" in run.stdout


def test_installed_versions_meet_the_declared_floors() -> None:
    """Every core dependency installed here is at least the floor pyproject.toml declares (and the floors are the
    versions the core tests were run on)."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    low = []
    for text in project["dependencies"]:
        req = Requirement(text)
        if not req.specifier.contains(version(req.name), prereleases=True):
            low.append(f"{req.name} {version(req.name)} does not satisfy {req.specifier}")
    assert not low, "; ".join(low)
