"""ResultFiles: records on disk as they happen, an atomic summary, clear errors for bad paths."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from loadgen.errors import UsageError
from loadgen.observe import ResultFiles, SessionOutcome, SessionRecord, StepRecord


def _step(step: int) -> StepRecord:
    return StepRecord(
        "s1", "coder", step, "turn", "chat", 1_700_000_000.0, e2e_s=0.5, itl_s=[0.01, 0.03]
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_steps_are_readable_line_by_line_while_the_writer_is_open(tmp_path: Path) -> None:
    with ResultFiles(tmp_path) as files:
        files.write_step(_step(0))
        assert [line["step"] for line in _lines(files.steps_path)] == [0]
        files.write_step(_step(1))
        assert [line["step"] for line in _lines(files.steps_path)] == [0, 1]


def test_sessions_are_readable_line_by_line_while_the_writer_is_open(tmp_path: Path) -> None:
    with ResultFiles(tmp_path) as files:
        files.write_session(SessionRecord("s1", "coder", 0.0, 3.5, 4, SessionOutcome.COMPLETED))
        assert _lines(files.sessions_path)[0]["outcome"] == "completed"


def test_step_lines_summarise_inter_token_gaps(tmp_path: Path) -> None:
    with ResultFiles(tmp_path) as files:
        files.write_step(_step(0))
        line = _lines(files.steps_path)[0]
    assert line["itl_count"] == 2
    assert "itl_s" not in line


def test_missing_out_dir_is_created_with_parents(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "2024-01-01"
    with ResultFiles(out) as files:
        assert files.steps_path.parent == out
    assert (out / "steps.jsonl").is_file()
    assert (out / "sessions.jsonl").is_file()


def test_out_dir_under_a_regular_file_raises_usage_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a directory")
    bad = blocker / "run1"
    with pytest.raises(UsageError, match=str(bad)):
        ResultFiles(bad)


def test_out_dir_that_is_a_regular_file_raises_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="output directory"):
        ResultFiles(blocker)


def test_write_summary_writes_indented_json_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    with ResultFiles(tmp_path) as files:
        written = files.write_summary({"schema": "agentload.summary/1", "requests": {"ok": 3}})
    assert written == tmp_path / "summary.json"
    assert orjson.loads(written.read_bytes())["requests"] == {"ok": 3}
    assert written.read_text().startswith('{\n  "schema"')
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sessions.jsonl",
        "steps.jsonl",
        "summary.json",
    ]


def test_write_summary_interrupted_mid_write_keeps_the_previous_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ResultFiles(tmp_path) as files:
        files.write_summary({"run": "first"})

        def power_cut(fd: int) -> None:
            raise OSError("disk vanished")

        monkeypatch.setattr(os, "fsync", power_cut)
        with pytest.raises(OSError, match="disk vanished"):
            files.write_summary({"run": "second"})
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == {"run": "first"}
    assert not list(tmp_path.glob(".summary.json.*"))


def test_close_is_idempotent(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    files.close()
    files.close()
    with pytest.raises(ValueError, match="closed"):
        files.write_step(_step(0))


def test_a_new_run_starts_the_record_files_afresh(tmp_path: Path) -> None:
    with ResultFiles(tmp_path) as files:
        files.write_step(_step(0))
    with ResultFiles(tmp_path) as files:
        files.write_step(_step(7))
    assert [line["step"] for line in _lines(tmp_path / "steps.jsonl")] == [7]
