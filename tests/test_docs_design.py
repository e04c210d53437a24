"""docs/design.md draws the package tree as it is: every module named, none that is gone."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
MODULES = sorted(
    path.relative_to(ROOT / "loadgen")
    for path in (ROOT / "loadgen").rglob("*.py")
    if path.name != "__init__.py"
)
# A module is named by its file name (`session.py`), or by a stem in a list of commands
# (`replay_command`), or by a pattern (`kernel_*.py`).
NAMED = set(re.findall(r"[\w*]+\.py\b", PAGE)) | set(re.findall(r"\b\w+_command\b", PAGE))


def named(module: Path) -> bool:
    names = {module.name, module.stem}
    return any(fnmatch.fnmatch(name, pattern) for name in names for pattern in NAMED)


def test_every_module_of_the_package_is_named_on_the_design_page() -> None:
    missing = [str(m) for m in MODULES if not named(m)]
    assert not missing, f"docs/design.md does not name: {missing}"


def test_every_package_is_drawn_in_the_tree() -> None:
    packages = sorted(
        path.parent.relative_to(ROOT / "loadgen")
        for path in (ROOT / "loadgen").rglob("__init__.py")
        if path.parent != ROOT / "loadgen"
    )
    missing = [str(p) for p in packages if f"{p.name}/" not in PAGE]
    assert not missing, f"docs/design.md's tree lacks: {missing}"


def test_every_module_the_page_names_exists() -> None:
    names = {m.name for m in MODULES} | {"__init__.py"}
    elsewhere = {path.name for path in ROOT.rglob("*.py") if ".git" not in path.parts}
    gone = [
        n for n in NAMED
        if n.endswith(".py") and "*" not in n and n not in names and n not in elsewhere
    ]  # fmt: skip
    assert not gone, f"docs/design.md names files that do not exist: {gone}"
