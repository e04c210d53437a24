"""A reply cut short of its forced length: the server's window when it filled it, else a fault."""

from __future__ import annotations

from loadgen.agents.agent import StepPlan
from loadgen.profile.schema import Checks
from loadgen.protocol.failures import FailureKind
from loadgen.protocol.reply import Reply, Usage
from loadgen.runtime.checks import SessionBaseline, check_reply


def _cut_short(prompt: int, output: int) -> tuple[StepPlan, Reply]:
    plan = StepPlan(kind="turn", api="chat", body=[], max_tokens=35, forced_min_tokens=35,
                    context_tokens=prompt, continues_history=False)  # fmt: skip
    reply = Reply(api="chat", finish_reason="length", usage=Usage(prompt, output))
    return plan, reply


def test_a_reply_that_filled_an_unknown_window_is_that_window_overflowing() -> None:
    plan, reply = _cut_short(2017, 31)
    [finding] = check_reply(plan, reply, SessionBaseline(), Checks())
    assert finding.kind == FailureKind.CONTEXT_OVERFLOW
    assert finding.window_tokens == 2048
    assert "filled the server's window at 2048 tokens" in finding.message


def test_a_reply_that_filled_the_known_window_is_that_window_overflowing() -> None:
    plan, reply = _cut_short(2017, 31)
    [finding] = check_reply(plan, reply, SessionBaseline(), Checks(), window_tokens=2048)
    assert finding.kind == FailureKind.CONTEXT_OVERFLOW


def test_a_reply_cut_short_with_room_left_in_a_known_window_is_an_abnormal_finish() -> None:
    plan, reply = _cut_short(1000, 31)
    [finding] = check_reply(plan, reply, SessionBaseline(), Checks(), window_tokens=2048)
    assert finding.kind == FailureKind.ABNORMAL_FINISH
    assert finding.window_tokens is None
