"""Ceiling search: the highest load a target holds within its SLOs, and what breaks first."""

from loadgen.ceiling.measure import GeneratorLimits, Windows
from loadgen.ceiling.result import CEILING_SCHEMA, ceiling_document, format_ceiling
from loadgen.ceiling.run import CeilingOptions, run_ceiling
from loadgen.ceiling.search import LevelResult, Search, SearchSettings
from loadgen.ceiling.slos import build_slos, goodput_caps

__all__ = [
    "CEILING_SCHEMA",
    "CeilingOptions",
    "GeneratorLimits",
    "LevelResult",
    "Search",
    "SearchSettings",
    "Windows",
    "build_slos",
    "ceiling_document",
    "format_ceiling",
    "goodput_caps",
    "run_ceiling",
]
