"""The tree is lint-clean, formatted, type-checked, and its imports point down the layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loadgen"

# What each part of loadgen may import from loadgen (itself always allowed). Every package
# and top-level module must be listed: a new one is placed in the layers on purpose.
ALLOWED = {
    "__init__": {"errors"},
    "__main__": {"cli"},
    "errors": set(),
    "background": set(),  # cancel_and_wait: usable from every layer, imports nothing
    "event_loop": set(),  # run_main: usable from every layer, imports nothing
    "transport": {"errors"},
    "protocol": {"transport", "errors"},
    "observe": {"protocol", "errors"},
    "agents": {"protocol", "errors"},
    "traces": {"protocol", "errors"},
    "profile": {"agents", "protocol", "errors"},
    "runtime": {"profile", "agents", "observe", "protocol", "transport", "traces", "errors"},
    "sim": {"protocol", "errors"},
    "gates": {"protocol", "errors"},
    "record": {"transport", "protocol", "traces", "observe", "errors"},
    "report": {"gates", "observe", "profile", "protocol", "errors"},
    # the digital twin: probes a target (runtime's start-up probes) and writes a sim config
    "twin": {"runtime", "sim", "observe", "protocol", "transport", "errors"},
    "ceiling": {
        "runtime",
        "profile",
        "agents",
        "observe",
        "gates",
        "protocol",
        "transport",
        "traces",
        "errors",
    },
    "orchestration": {
        "ceiling",
        "gates",
        "sim",
        "runtime",
        "profile",
        "agents",
        "observe",
        "protocol",
        "transport",
        "traces",
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
        "gates",
        "traces",
        "record",
        "twin",
        "errors",
    },
}


# Below every layer: any part may import these, and they import nothing of loadgen.
FOUNDATION = {"background", "event_loop"}


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


def _loadgen_imports(path: Path) -> tuple[set[str], int]:
    """The absolute module names `path` imports, and how many relative imports it has."""
    found = set()
    relative = 0
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative += 1  # the layer check reads absolute names only
            elif node.module:
                names = [node.module]
        found.update(names)
    return found, relative


def _layer(package: Path, path: Path) -> str:
    rel = path.relative_to(package)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def layer_violations(package: Path, allowed: dict[str, set[str]]) -> list[str]:
    """Imports that point up or sideways, parts missing from `allowed`, relative imports."""
    wrong = []
    root = package.parent
    for path in sorted(package.rglob("*.py")):
        layer = _layer(package, path)
        where = path.relative_to(root)
        if layer not in allowed:
            wrong.append(f"{where}: '{layer}' is not in the layer table (ALLOWED); place it")
            continue
        names, relative = _loadgen_imports(path)
        if relative:
            wrong.append(f"{where}: {relative} relative import(s); write them absolute")
        for name in names:
            parts = name.split(".")
            if parts[0] != package.name or len(parts) < 2:
                continue
            target = parts[1]
            if target != layer and target not in allowed[layer] and target not in FOUNDATION:
                wrong.append(f"{where} imports {name}")
    return wrong


def test_imports_point_down_the_layers() -> None:
    wrong = layer_violations(PACKAGE, ALLOWED)
    assert not wrong, "\n".join(wrong)


def test_a_package_missing_from_the_layer_table_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "loadgen"
    (package / "newthing").mkdir(parents=True)
    (package / "errors.py").write_text("")
    (package / "newthing" / "__init__.py").write_text("from loadgen.errors import X\n")
    assert layer_violations(package, {"errors": set()}) == [
        "loadgen/newthing/__init__.py: 'newthing' is not in the layer table (ALLOWED); place it"
    ]


def test_a_relative_import_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "loadgen"
    (package / "runtime").mkdir(parents=True)
    (package / "runtime" / "a.py").write_text("from ..errors import X\n")
    assert layer_violations(package, {"runtime": set()}) == [
        "loadgen/runtime/a.py: 1 relative import(s); write them absolute"
    ]


def test_engine_never_imports_locust_or_gevent() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        # The Locust adapter, and the CLI that decides when to patch, are above the engine.
        if _layer(PACKAGE, path) not in {"orchestration", "cli"}
        for name in _loadgen_imports(path)[0]
        if name.split(".")[0] in {"locust", "gevent"}
    ]
    assert not offenders, "\n".join(offenders)


def test_a_function_over_the_complexity_or_length_limits_fails_the_lint(tmp_path: Path) -> None:
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(20))
    statements = "\n".join(f"    y{i} = {i}" for i in range(70))
    module = tmp_path / "too_much.py"
    module.write_text(
        f'"""Too much."""\n\n\ndef tangled(x: int) -> int:\n{branches}\n    return -1\n\n\n'
        f"def long(x: int) -> int:\n{statements}\n    return x\n"
    )
    result = _run(
        sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
        str(ROOT / "pyproject.toml"), str(module),
    )  # fmt: skip
    assert result.returncode == 1
    assert "C901 `tangled` is too complex" in result.stdout
    assert "PLR0915 Too many statements" in result.stdout


# The CLI only parses and hands over: starting and reaping processes is orchestration's.
_SPAWNING_MODULES = {"subprocess", "multiprocessing"}
_SPAWNING_CALLS = {
    "fork", "forkpty", "Popen", "posix_spawn", "posix_spawnp", "spawnv", "spawnve", "spawnl",
    "spawnle", "spawnvp", "spawnvpe", "spawnlp", "spawnlpe", "create_subprocess_exec",
    "create_subprocess_shell",
}  # fmt: skip


def process_spawning(folder: Path) -> list[str]:
    """Where the modules under `folder` import subprocess or multiprocessing or start a
    process (os.fork, Popen, os.posix_spawn, asyncio.create_subprocess_*...)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        where = path.relative_to(folder.parent)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                names = [] if isinstance(node, ast.Import) else [a.name for a in node.names]
                for module in modules:
                    if module.split(".")[0] in _SPAWNING_MODULES:
                        found.append(f"{where}:{node.lineno} imports {module}")
                found += [
                    f"{where}:{node.lineno} imports {name}"
                    for name in names
                    if name in _SPAWNING_CALLS or name in _SPAWNING_MODULES
                ]
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in _SPAWNING_CALLS:
                    found.append(f"{where}:{node.lineno} calls {name}")
    return found


def test_the_cli_starts_no_process() -> None:
    found = process_spawning(PACKAGE / "cli")
    assert not found, "\n".join(found)


def test_a_cli_module_that_starts_a_process_is_reported(tmp_path: Path) -> None:
    cli = tmp_path / "cli"
    cli.mkdir()
    (cli / "a.py").write_text("import subprocess\nimport multiprocessing.pool\n")
    (cli / "b.py").write_text("import os\n\n\ndef go() -> None:\n    os.fork()\n")
    (cli / "c.py").write_text("from subprocess import Popen\n\nPopen(['true'])\n")
    (cli / "d.py").write_text("import asyncio\n\nasyncio.create_subprocess_exec('true')\n")
    (cli / "ok.py").write_text("import argparse\n\nargparse.ArgumentParser().parse_args()\n")
    assert process_spawning(cli) == [
        "cli/a.py:1 imports subprocess",
        "cli/a.py:2 imports multiprocessing.pool",
        "cli/b.py:5 calls fork",
        "cli/c.py:1 imports subprocess",
        "cli/c.py:1 imports Popen",
        "cli/c.py:3 calls Popen",
        "cli/d.py:3 calls create_subprocess_exec",
    ]


def _module_name(package: Path, path: Path) -> str:
    top = package
    while (top.parent / "__init__.py").exists():  # a subpackage: named from the top one
        top = top.parent
    parts = list(path.relative_to(top.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles(package: Path) -> list[str]:
    """Cycles among the modules under `package`, imports under TYPE_CHECKING counted."""
    paths = {_module_name(package, path): path for path in sorted(package.rglob("*.py"))}
    graph: dict[str, list[str]] = {}
    for name, path in paths.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = sorted(imported & paths.keys() - {name})
    found: list[str] = []
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        stack.append(name)
        for child in graph[name]:
            if child in stack:
                found.append(" -> ".join([*stack[stack.index(child) :], child]))
            elif child not in done:
                visit(child, stack)
        stack.pop()
        done.add(name)

    for name in graph:
        if name not in done:
            visit(name, [])
    return found


def test_the_prometheus_package_has_no_import_cycle() -> None:
    assert import_cycles(PACKAGE / "observe" / "prometheus") == []


def test_an_import_cycle_hidden_under_type_checking_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg.b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg.a import A\n"
    )
    assert import_cycles(package) == ["pkg.a -> pkg.b -> pkg.a"]
