"""Records, mergeable histograms, run statistics, generator health and result files."""

from loadgen.observe.generator_health import (
    CPU_SATURATED_PERCENT,
    LOOP_LAG_SATURATED_S,
    LOOP_PROBE_INTERVAL_S,
    SCHEDULE_LAG_SATURATED_S,
    GeneratorHealth,
    combine_reports,
)
from loadgen.observe.histogram import LatencyHistogram
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord, ToolOutcome
from loadgen.observe.result_files import ResultFiles
from loadgen.observe.run_stats import RUN_STATS_SCHEMA, AgentStats, RunStats, SessionCounts
from loadgen.observe.summary import SUMMARY_SCHEMA, build_summary
from loadgen.observe.summary_text import format_summary

__all__ = [
    "CPU_SATURATED_PERCENT",
    "LOOP_LAG_SATURATED_S",
    "LOOP_PROBE_INTERVAL_S",
    "RUN_STATS_SCHEMA",
    "SCHEDULE_LAG_SATURATED_S",
    "SUMMARY_SCHEMA",
    "AgentStats",
    "GeneratorHealth",
    "LatencyHistogram",
    "ResultFiles",
    "RunStats",
    "SessionCounts",
    "SessionOutcome",
    "SessionRecord",
    "StepRecord",
    "ToolOutcome",
    "build_summary",
    "combine_reports",
    "format_summary",
]
