"""One unit of tokens per trace: the upstream's, learned from the calls that reported usage.

A call whose reply carried usage is recorded with the server's counts; one without (a stream
whose client did not ask for usage) can only be counted with agentload's stand-in tokenizer
(loadgen.protocol.tokens), which a real tokenizer may count at half or twice as many. Mixed
in one trace, the two units make a session's prompt lengths jump up and down. So every call
with usage also teaches the ratio server / stand-in (prompt and output apart: prose, code
and templates tokenize differently), and calls without usage are scaled by it. Ratios are
kept per model name, since each model behind a router may have its own tokenizer; calls
before a model's first usage keep the stand-in counts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Scaled", "TokenScale"]


@dataclass(slots=True)
class _Sums:
    server: int = 0
    standin: int = 0

    def ratio(self) -> float | None:
        return self.server / self.standin if self.standin else None


@dataclass(frozen=True, slots=True)
class Scaled:
    """A count in the server's units where a ratio was known, and the ratio used (None: the
    stand-in count, unscaled)."""

    tokens: int
    ratio: float | None


class TokenScale:
    """Server tokens per stand-in token, summed over every call with usage, per model."""

    def __init__(self) -> None:
        self._prompt: dict[str, _Sums] = {}
        self._output: dict[str, _Sums] = {}

    def learn(
        self,
        model: str,
        prompt: tuple[int | None, int],
        output: tuple[int | None, int],
    ) -> None:
        """Take a call's (server count or None, stand-in count) of its prompt and its output."""
        for table, (server, standin) in ((self._prompt, prompt), (self._output, output)):
            # An empty side says nothing of the ratio (a reply of only hidden reasoning, say).
            if server is not None and server > 0 and standin > 0:
                sums = table.setdefault(model, _Sums())
                sums.server += server
                sums.standin += standin

    def prompt(self, model: str, standin: int) -> Scaled:
        """A prompt of `standin` stand-in tokens, in the server's tokens where known."""
        return _scaled(self._prompt.get(model), standin)

    def output(self, model: str, standin: int) -> Scaled:
        """A reply of `standin` stand-in tokens, in the server's tokens where known."""
        return _scaled(self._output.get(model), standin)


def _scaled(sums: _Sums | None, standin: int) -> Scaled:
    ratio = sums.ratio() if sums is not None else None
    if ratio is None:
        return Scaled(standin, None)
    return Scaled(round(standin * ratio), round(ratio, 4))
