"""JUnit XML for CI systems: one testcase per gate (or per compared metric)."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import UsageError
from loadgen.gates.gates import GateResult

__all__ = ["JUnitCase", "run_properties", "write_junit", "write_junit_cases"]


@dataclass(frozen=True)
class JUnitCase:
    """One testcase: passed, or failed with a one-line message and optional details."""

    name: str
    classname: str
    passed: bool
    message: str = ""
    details: str = ""


def run_properties(summary: Mapping[str, Any] | None) -> dict[str, str]:
    """What a CI page should show about the run: profile, target, duration, volumes."""
    if not summary:
        return {}
    target = summary.get("target") or {}
    requests = summary.get("requests") or {}
    sessions = summary.get("sessions") or {}
    props = {
        "schema": summary.get("schema"),
        "profile": summary.get("profile"),
        "target.url": target.get("url"),
        "target.model": target.get("model"),
        "duration_s": summary.get("duration_s"),
        "requests.total": requests.get("total"),
        "requests.failed": requests.get("failed"),
        "sessions.completed": sessions.get("completed"),
        "sessions.failed": sessions.get("failed"),
        "generator.saturated": (summary.get("generator") or {}).get("saturated"),
    }
    return {k: str(v) for k, v in props.items() if v is not None}


def write_junit_cases(
    path: str | os.PathLike[str],
    cases: Sequence[JUnitCase],
    suite_name: str,
    *,
    properties: Mapping[str, str] | None = None,
    time_s: float = 0.0,
) -> Path:
    """Write a <testsuites> document holding one <testsuite> of `cases`; returns the path."""
    failures = sum(not c.passed for c in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0"}
    root = ET.Element("testsuites", {"name": "agentload", **counts, "time": f"{time_s:.3f}"})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": suite_name,
            **counts,
            "time": f"{time_s:.3f}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    if properties:
        props = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(props, "property", {"name": name, "value": value})
    for case in cases:
        element = ET.SubElement(
            suite, "testcase", {"name": case.name, "classname": case.classname, "time": "0"}
        )
        if not case.passed:
            failure = ET.SubElement(element, "failure", {"message": case.message, "type": "fail"})
            failure.text = case.details or case.message
        elif case.message:
            ET.SubElement(element, "system-out").text = case.message
    ET.indent(root)
    target = Path(path)
    try:
        if target.parent != Path():
            target.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise UsageError(f"cannot write JUnit XML to {target}: {exc.strerror or exc}") from exc
    return target


def write_junit(
    path: str | os.PathLike[str],
    results: Sequence[GateResult],
    suite_name: str,
    *,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write the gate results as JUnit XML, with the run's facts as suite properties."""
    cases = [
        JUnitCase(
            name=r.gate.text,
            classname=f"agentload.gates.{suite_name}",
            passed=r.passed,
            message=r.reason,
        )
        for r in results
    ]
    duration = (summary or {}).get("duration_s")
    return write_junit_cases(
        path,
        cases,
        suite_name,
        properties=run_properties(summary),
        time_s=float(duration) if isinstance(duration, int | float) else 0.0,
    )
