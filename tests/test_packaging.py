"""The built distribution: one import package (loadgen), no top-level `agents` to shadow the
OpenAI Agents SDK, and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = out.glob("agentload-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_only_the_loadgen_package(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    packages = {t for t in top if not t.endswith(".dist-info")}
    assert packages == {"loadgen"}


def test_wheel_never_ships_a_top_level_agents_package(wheel: zipfile.ZipFile) -> None:
    assert not [n for n in wheel.namelist() if n.startswith("agents/")]


def test_wheel_declares_the_agentload_console_script(wheel: zipfile.ZipFile) -> None:
    (entry,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "agentload = loadgen.cli.entry:main" in wheel.read(entry).decode()


def test_wheel_holds_every_package_of_the_source_tree(wheel: zipfile.ZipFile) -> None:
    source = {
        str(init.parent.relative_to(ROOT))
        for init in (ROOT / "loadgen").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    shipped = {name.rsplit("/", 1)[0] for name in wheel.namelist() if name.endswith("__init__.py")}
    assert source <= shipped


def test_wheel_ships_the_builtin_profiles(wheel: zipfile.ZipFile) -> None:
    shipped = {
        n.rsplit("/", 1)[1] for n in wheel.namelist() if n.startswith("loadgen/builtin_profiles/")
    }
    expected = {p.name for p in (ROOT / "profiles").glob("*.yaml")}
    assert expected
    assert expected <= shipped
