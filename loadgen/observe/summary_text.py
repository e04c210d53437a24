"""A short human-readable rendering of a summary.json document, for the terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_summary"]

_MISSING = "n/a"


def _seconds(value: float | None) -> str:
    """A latency with a unit that keeps three significant figures readable."""
    if value is None:
        return _MISSING
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def _rate(value: float | None, unit: str) -> str:
    return _MISSING if value is None else f"{value:,.1f} {unit}"


def _quantiles(latency: Mapping[str, Any], *names: str) -> str:
    return "  ".join(f"{name} {_seconds(latency.get(name))}" for name in names)


def format_summary(summary: Mapping[str, Any]) -> str:
    """About a dozen lines: what was run, how it went, and whether the generator kept up."""
    target = summary.get("target", {})
    where = target.get("url", _MISSING)
    if target.get("model"):
        where += f" ({target['model']})"
    sessions = summary["sessions"]
    requests = summary["requests"]
    throughput = summary["throughput"]
    latency = summary["latency"]
    failures = {k: n for k, n in summary["state_failures"].items() if n}
    recovered = sum(summary.get("recoveries", {}).values())
    lines = [
        f"agentload · profile {summary.get('profile', _MISSING)} · target {where}",
        f"duration        {summary['duration_s']:.1f} s",
        f"sessions        {sessions['completed']:,} completed, {sessions['failed']:,} failed, "
        f"{sessions['aborted']:,} aborted ({sessions['started']:,} started)",
        f"requests        {requests['ok']:,} ok, {requests['failed']:,} failed",
        f"throughput      {_rate(throughput['output_tokens_per_s'], 'output tok/s')}, "
        f"{_rate(throughput['sessions_per_min'], 'sessions/min')}, "
        f"{_rate(throughput['requests_per_s'], 'req/s')}",
        f"TTFT            {_quantiles(latency['ttft_s'], 'p50', 'p95', 'p99')}",
        f"ITL             {_quantiles(latency['itl_s'], 'p50', 'p99')}",
        f"end-to-end      {_quantiles(latency['e2e_s'], 'p50', 'p95')}",
    ]
    if failures:
        listed = ", ".join(f"{kind} {n:,}" for kind, n in sorted(failures.items()))
        lines.append(f"state failures  {listed} ({recovered:,} recovered)")
    else:
        lines.append("state failures  none")
    generator = summary.get("generator", {})
    if generator.get("saturated"):
        reasons = "; ".join(generator.get("reasons", [])) or "see generator in summary.json"
        lines.append(f"WARNING: the load generator was saturated ({reasons});")
        lines.append("         measured latencies include its own delays, add workers or CPU")
    return "\n".join(lines)
