"""Locust's statistics with "Aggregated" meaning the LLM calls (STEP), not STEP + SESSION.

Each step is a Locust request of type STEP, and each whole session one of type SESSION (its
duration: seconds, where a step takes a fraction). Locust adds every request to
`RequestStats.total`, which is the "Aggregated" row (web UI, --csv, --html), the Charts tab's
RPS, response-time and failures lines, and what a worker sends its master as its total: the
session times made the aggregate percentiles a session's (p95 about 11 s beside steps' 2-3 s)
and counted each session as one more request.

Here SESSION requests and failures keep their own rows and Failures-tab entries but leave
`total`. Failures leave it too: its fail ratio is then failed steps over steps, one
population, where a session failure over step requests would mix two (and a session that
failed is in most cases already counted through the step that failed it).
"""

from __future__ import annotations

from locust.stats import RequestStats, StatsError

__all__ = ["SESSION", "STEP", "StepTotalStats", "steps_only_in_total"]

STEP = "STEP"  # request type of one LLM call
SESSION = "SESSION"  # request type of one whole agent session


class StepTotalStats(RequestStats):
    """RequestStats whose total ("Aggregated") leaves SESSION requests and failures out."""

    def log_request(self, method: str, name: str, response_time: int, content_length: int) -> None:
        if method != SESSION:
            super().log_request(method, name, response_time, content_length)
            return
        self.entries[(name, method)].log(response_time, content_length)

    def log_error(self, method: str, name: str, error: Exception | str | None) -> None:
        if method != SESSION:
            super().log_error(method, name, error)
            return
        # RequestStats.log_error without its `self.total.log_error(error)`.
        self.entries[(name, method)].log_error(error)
        key = StatsError.create_key(method, name, error)
        entry = self.errors.get(key)
        if entry is None:
            entry = self.errors[key] = StatsError(method, name, error)
        entry.occurred()


def steps_only_in_total(stats: RequestStats) -> None:
    """Make `stats` (an Environment's, in use) a StepTotalStats, in place.

    In place rather than a new one on the Environment: a distributed runner keeps the
    instance it was created with (its report to the master serializes that one), and plain
    `locust -f` workers get theirs from Locust after the locustfile is imported. Only a
    plain RequestStats is changed: the subclass adds no state, so the object stays whole.
    """
    if type(stats) is RequestStats:
        stats.__class__ = StepTotalStats
