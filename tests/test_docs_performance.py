"""docs/performance.md stays short and true to the repository: it fits on two screens, every
benchmark script it names exists, and nothing links to the old docs/benchmarks.md (now the
measurement log bench/LOG.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERFORMANCE = ROOT / "docs" / "performance.md"
# Trees that are not the project's own documents: VCS data, build outputs, environments.
SKIPPED_DIRS = {"build", "dist", "node_modules", "test-artifacts", "venv"}
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _markdown_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [
            d
            for d in dirs
            if not (d.startswith(".") or d in SKIPPED_DIRS or d.endswith(".egg-info"))
        ]
        found.extend(Path(folder, f) for f in files if f.endswith(".md"))
    return found


def _link_targets(md: Path) -> list[Path]:
    """The local files md's markdown links point at (URLs and in-page anchors left out)."""
    targets = []
    for raw in LINK.findall(md.read_text(encoding="utf-8")):
        target = raw.split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue
        base = ROOT if target.startswith("/") else md.parent
        targets.append((base / target.lstrip("/")).resolve())
    return targets


def test_performance_page_exists_and_fits_on_two_screens() -> None:
    assert PERFORMANCE.is_file()
    lines = PERFORMANCE.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 100, f"docs/performance.md has {len(lines)} lines (at most 100)"


def test_every_bench_script_the_page_names_exists() -> None:
    scripts = set(re.findall(r"bench/[\w.-]+\.py", PERFORMANCE.read_text(encoding="utf-8")))
    assert scripts, "docs/performance.md names no bench/*.py script"
    missing = sorted(s for s in scripts if not (ROOT / s).is_file())
    assert not missing, f"docs/performance.md names scripts that do not exist: {missing}"


def test_the_page_links_only_to_files_that_exist() -> None:
    broken = [t for t in _link_targets(PERFORMANCE) if not t.exists()]
    assert not broken, f"docs/performance.md links to missing files: {broken}"


def test_no_markdown_file_links_to_the_old_benchmarks_page() -> None:
    old = (ROOT / "docs" / "benchmarks.md").resolve()
    files = _markdown_files()
    assert PERFORMANCE in files
    offenders = [
        str(md.relative_to(ROOT))
        for md in files
        if old in _link_targets(md) or "docs/benchmarks.md" in md.read_text(encoding="utf-8")
    ]
    assert not offenders, f"these still point at docs/benchmarks.md: {offenders}"
