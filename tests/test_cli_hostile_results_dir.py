"""A profile's `name:` is free text; the default results folder made of it
(results/NAME-TIMESTAMP) must stay one folder under results/, through the real CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadgen.cli.run_setup import default_out_dir

AGENTLOAD = [sys.executable, "-m", "loadgen"]
SMOKE = Path(__file__).resolve().parents[1] / "profiles" / "ci-smoke.yaml"


@pytest.mark.parametrize(
    "name",
    ["../../escaped", "/abs/escaped", "..", ".", "a/../../b", "..\\..\\c", "", "-x"],
)
def test_default_out_dir_is_one_folder_under_results(name: str) -> None:
    out = default_out_dir(name)
    assert out.parent == Path("results")
    assert not out.is_absolute()
    assert ".." not in out.name
    assert "/" not in out.name
    assert "\\" not in out.name
    assert not out.name.startswith(("-", "."))
    assert default_out_dir(name, prefix="ceiling-").name.startswith("ceiling-")


@pytest.mark.slow
def test_a_profile_named_with_dot_dot_or_an_absolute_path_writes_under_results(
    tmp_path: Path,
) -> None:
    cwd = tmp_path / "work" / "deep"
    cwd.mkdir(parents=True)
    outside = tmp_path / "outside"
    profile = yaml.safe_load(SMOKE.read_text())
    profile["gates"] = []  # what is checked here is where the results go
    for i, name in enumerate(["../../escaped", f"{outside}/abs"]):
        profile["name"] = name
        (cwd / f"p{i}.yaml").write_text(yaml.safe_dump(profile))
        result = subprocess.run(
            [*AGENTLOAD, "run", f"p{i}.yaml", "--duration", "1s", "--quiet"],
            capture_output=True, text=True, timeout=120, cwd=cwd,
        )  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in (cwd / "results").iterdir())
    assert len(folders) == 2, folders
    assert all((cwd / "results" / f / "summary.json").is_file() for f in folders)
    # Nothing was created beside the profiles, above the working folder or at the path.
    assert sorted(p.name for p in cwd.iterdir()) == ["p0.yaml", "p1.yaml", "results"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["deep"]
