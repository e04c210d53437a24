"""The tree is lint-clean, formatted, type-checked, and its imports point down the layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loadgen"

# What each part of loadgen may import from loadgen (itself always allowed).
ALLOWED = {
    "errors": set(),
    "transport": {"errors"},
    "protocol": {"transport", "errors"},
    "observe": {"protocol", "errors"},
    "agents": {"protocol", "errors"},
    "profile": {"agents", "protocol", "errors"},
    "runtime": {"profile", "agents", "observe", "protocol", "transport", "errors"},
    "sim": {"protocol", "errors"},
    "report": {"observe", "profile", "protocol", "errors"},
    "ceiling": {
        "runtime",
        "profile",
        "agents",
        "observe",
        "report",
        "protocol",
        "transport",
        "errors",
    },
    "orchestration": {
        "ceiling",
        "runtime",
        "profile",
        "agents",
        "observe",
        "protocol",
        "transport",
        "errors",
    },
    "cli": {
        "ceiling",
        "orchestration",
        "runtime",
        "profile",
        "agents",
        "observe",
        "protocol",
        "transport",
        "sim",
        "report",
        "errors",
    },
}


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_ruff_formatted() -> None:
    result = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _loadgen_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.update(names)
    return found


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        layer = _layer(path)
        if layer not in ALLOWED:
            continue
        for name in _loadgen_imports(path):
            parts = name.split(".")
            if parts[0] != "loadgen" or len(parts) < 2:
                continue
            target = parts[1]
            if target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_engine_never_imports_locust_or_gevent() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        # The Locust adapter, and the CLI that decides when to patch, are above the engine.
        if _layer(path) not in {"orchestration", "cli"}
        for name in _loadgen_imports(path)
        if name.split(".")[0] in {"locust", "gevent"}
    ]
    assert not offenders, "\n".join(offenders)
