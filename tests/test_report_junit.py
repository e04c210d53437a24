"""JUnit XML of gate verdicts: one testcase per gate, failures with messages, run properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_gates import crafted_summary

from loadgen.errors import UsageError
from loadgen.gates import evaluate_gates, parse_gates
from loadgen.report import write_junit
from loadgen.report.junit import JUnitCase, write_junit_cases


def test_one_testcase_per_gate_with_a_failure_element_for_failed_gates(tmp_path: Path) -> None:
    summary = crafted_summary()
    results = evaluate_gates(
        summary, parse_gates(["ttft_p95 < 2s", "error_rate < 1%", "ttft_p50 < 1ms abort"])
    )
    path = write_junit(tmp_path / "reports" / "junit.xml", results, "crafted", summary=summary)
    assert path.read_bytes().startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.attrib["name"] == "crafted"
    assert (suite.attrib["tests"], suite.attrib["failures"], suite.attrib["errors"]) == (
        "3",
        "2",
        "0",
    )
    assert float(suite.attrib["time"]) == 10.0
    cases = suite.findall("testcase")
    assert [c.attrib["name"] for c in cases] == [r.gate.text for r in results]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "error_rate = 20%, needs < 1%"
    properties = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
    assert properties["profile"] == "crafted"
    assert properties["target.url"] == "http://sim/v1"
    assert properties["requests.total"] == "5"
    assert properties["schema"] == "agentload.summary/1"


def test_escaping_keeps_the_document_valid(tmp_path: Path) -> None:
    cases = [JUnitCase('a < b & "c"', "agentload.x", False, "<&>'\"", "details\n<tag>")]
    path = write_junit_cases(tmp_path / "x.xml", cases, "odd <suite>")
    case = ET.parse(path).getroot().find("testsuite/testcase")
    assert case is not None
    assert case.attrib["name"] == 'a < b & "c"'
    failure = case.find("failure")
    assert failure is not None
    assert failure.text == "details\n<tag>"


def test_an_unwritable_path_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write JUnit XML"):
        write_junit_cases(blocker / "junit.xml", [], "s")
