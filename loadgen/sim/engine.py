"""The continuous-batching engine loop: waiting queue, running batch, chunked prefill, preemption.

Each step schedules running sequences first (one decode token each, or the next prefill
chunk) and then admits waiting ones while slots, the per-step token budget and KV blocks
allow. When a running sequence needs a block and none can be freed, the most recently
admitted sequence is preempted and later recomputed from scratch, as vLLM v1 does. The step
then "runs" for the time the step-time model gives, on a timeline kept against the event
loop clock so that Python overhead does not stretch the modelled hardware.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from hashlib import blake2b

from loadgen.background import cancel_and_wait
from loadgen.sim.config import SimConfig
from loadgen.sim.kv_cache import KVCache
from loadgen.sim.step_time import StepWork, step_seconds

__all__ = ["Engine", "EngineSequence", "chain_block_hashes"]

_MAX_CATCH_UP_S = 0.05  # lag the loop makes up for with back-to-back steps; more is lost


def chain_block_hashes(
    pieces: Sequence[str], block_size: int, parent: int = 0, *, stable: bool = False
) -> list[int]:
    """Hashes of each full block of `pieces`, each chained to the one before it.

    Python's hash() of text differs between processes; `stable` hashes (about 3x slower)
    are the same in every process, as a fleet spread over processes needs: its front
    asks the shards' prefix caches with hashes it made itself.
    """
    if stable:
        return _stable_chain(pieces, block_size, parent)
    hashes = []
    h = parent
    for start in range(0, len(pieces) - block_size + 1, block_size):
        h = hash((h, *pieces[start : start + block_size]))
        hashes.append(h)
    return hashes


def _stable_chain(pieces: Sequence[str], block_size: int, parent: int) -> list[int]:
    hashes = []
    h = parent
    for start in range(0, len(pieces) - block_size + 1, block_size):
        block = "\x1f".join(pieces[start : start + block_size]).encode()
        digest = blake2b(h.to_bytes(8, "big", signed=True) + block, digest_size=8).digest()
        h = int.from_bytes(digest, "big", signed=True)
        hashes.append(h)
    return hashes


class EngineSequence:
    """One request inside the engine: prompt blocks, planned output, progress and timings."""

    __slots__ = (
        "_waiter",
        "aborted",
        "arrival",
        "cached_tokens",
        "computed",
        "finished",
        "first_scheduled",
        "first_token_time",
        "last_token_time",
        "on_token",
        "output_count",
        "output_pieces",
        "preemptions",
        "private_blocks",
        "prompt_hashes",
        "prompt_len",
        "prompt_tail",
        "shared_hashes",
        "target_len",
        "token_times_ok",
    )

    def __init__(
        self,
        prompt_len: int,
        prompt_hashes: list[int],
        prompt_tail: list[str],
        output_pieces: list[str],
        arrival: float,
    ) -> None:
        self.prompt_len = prompt_len
        self.prompt_hashes = prompt_hashes  # grows with hashes of output blocks as they fill
        self.prompt_tail = prompt_tail  # prompt tokens after the last full block
        self.output_pieces = output_pieces  # the planned reply, one token each
        self.target_len = len(output_pieces)
        self.arrival = arrival
        self.computed = 0  # tokens whose KV is in cache (cached prefix included)
        self.output_count = 0
        self.cached_tokens = -1  # set at first admission, reported in usage
        self.shared_hashes: list[int] = []
        self.private_blocks = 0
        self.preemptions = 0
        self.first_scheduled = -1.0
        self.first_token_time = -1.0
        self.last_token_time = -1.0
        self.finished = False
        self.aborted = False
        self.token_times_ok = True
        self.on_token: Callable[[EngineSequence, float], None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def prefill_target(self) -> int:
        """Tokens that must be in cache before the next token can be sampled."""
        return self.prompt_len + self.output_count

    def block_hashes(self, count: int, block_size: int, *, stable: bool = False) -> list[int]:
        """Hashes of the first `count` full blocks of prompt + output so far."""
        known = self.prompt_hashes
        if count > len(known):
            # Blocks past the prompt's full ones hold the prompt's tail, then the reply.
            start = (len(known) - self.prompt_len // block_size) * block_size
            pieces = [*self.prompt_tail, *self.output_pieces[: self.output_count]][start:]
            parent = known[-1] if known else 0
            hashes = chain_block_hashes(pieces, block_size, parent, stable=stable)
            known.extend(hashes[: count - len(known)])
        return known[:count]

    async def wait(self, seen: int) -> None:
        """Return once more than `seen` tokens exist or the sequence has ended."""
        if self.output_count > seen or self.finished or self.aborted:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def notify(self) -> None:
        """Wake the handler streaming this sequence."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Engine:
    """Runs the batching loop as one asyncio task; handlers submit sequences and await tokens."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.kv = KVCache(config.num_kv_blocks, config.block_size)
        self.waiting: deque[EngineSequence] = deque()
        self.running: list[EngineSequence] = []
        self.preemptions = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.steps = 0
        # Wall seconds of steps at the modelled speed, and those the loop could not keep up
        # with and gave up on (more than _MAX_CATCH_UP_S behind): lost_s / busy_s is how much
        # slower than modelled the engine ran, which a faster-than-real-time run must check.
        self.busy_s = 0.0
        self.lost_s = 0.0
        self.epoch = 0  # crashes so far: a sequence of an earlier epoch was lost with its replica
        self.on_finish: Callable[[EngineSequence], None] | None = None
        self.on_step: Callable[[Engine], None] | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        """Stop the loop and end every sequence still in it."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for seq in [*self.running, *self.waiting]:
            seq.aborted = True
            seq.notify()

    async def crash(self) -> None:
        """The replica went away: stop, end every sequence and forget the KV cache (its prefix
        cache with it). Counters carry on; start() brings it back empty."""
        await self.stop()
        self.running.clear()
        self.waiting.clear()
        self.kv = KVCache(self.config.num_kv_blocks, self.config.block_size)
        self.epoch += 1
        if self.on_step is not None:
            self.on_step(self)

    def submit(self, seq: EngineSequence) -> None:
        """Queue a sequence; it is scheduled from the next step on."""
        self.waiting.append(seq)
        self._wakeup.set()

    def abort(self, seq: EngineSequence) -> None:
        """The client went away: drop the sequence and give its blocks back."""
        if seq.finished or seq.aborted:
            return
        seq.aborted = True
        if seq in self.running:
            self.running.remove(seq)
            self._release(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.notify()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if not self.running and not self.waiting:
                self._wakeup.clear()
                if self.on_step is not None:
                    self.on_step(self)
                await self._wakeup.wait()
                deadline = loop.time()
            scheduled, work = self._schedule(loop.time())
            duration = self.config.wall_s(step_seconds(self.config.perf, work))
            now = loop.time()
            # Keep the modelled timeline, but never try to catch up on more than 50 ms of lag.
            behind = now - _MAX_CATCH_UP_S - deadline
            if behind > 0:
                self.lost_s += behind
                deadline += behind
            deadline += duration
            self.busy_s += duration
            if deadline > now:
                await asyncio.sleep(deadline - now)
            else:
                await asyncio.sleep(0)
            self._complete(scheduled, loop.time())
            self.steps += 1
            if self.on_step is not None:
                self.on_step(self)

    def _reserve(self, seq: EngineSequence, new_tokens: int) -> bool:
        """Allocate the blocks `new_tokens` more tokens of `seq` need; False if memory is full."""
        held = len(seq.shared_hashes) + seq.private_blocks
        needed = math.ceil((seq.computed + new_tokens) / self.config.block_size) - held
        if needed <= 0:
            return True
        if not self.kv.allocate(needed):
            return False
        seq.private_blocks += needed
        return True

    def _schedule(self, now: float) -> tuple[list[tuple[EngineSequence, int]], StepWork]:
        budget = self.config.max_num_batched_tokens
        work = StepWork()
        scheduled: list[tuple[EngineSequence, int]] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            remaining = seq.prefill_target - seq.computed
            decode = remaining == 1 and seq.output_count > 0
            new = min(remaining, budget)
            while not self._reserve(seq, new):
                victim = self.running.pop()
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                scheduled.append((seq, new))
                work.add(new, seq.computed, prefill=not decode)
                budget -= new
                i += 1
        if not preempted:
            budget = self._admit(now, budget, work, scheduled)
        return scheduled, work

    def _admit(
        self,
        now: float,
        budget: int,
        work: StepWork,
        scheduled: list[tuple[EngineSequence, int]],
    ) -> int:
        bs = self.config.block_size
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            target = seq.prefill_target
            full_blocks = target // bs
            hashes = seq.block_hashes(full_blocks, bs, stable=self.config.stable_hashes)
            hit = self.kv.cached_prefix(hashes)
            # At least one token must be computed to sample from, as in vLLM.
            hit = min(hit, (target - 1) // bs)
            self.kv.acquire(hashes[:hit])
            seq.shared_hashes = list(hashes[:hit])
            seq.computed = hit * bs
            new = min(target - seq.computed, budget)
            if not self._reserve(seq, new):
                self.kv.release(seq.shared_hashes, 0)
                seq.shared_hashes = []
                seq.computed = 0
                break
            self.waiting.popleft()
            if seq.cached_tokens < 0:
                seq.cached_tokens = hit * bs
                seq.first_scheduled = now
                self.prefix_queries += seq.prompt_len
                self.prefix_hits += seq.cached_tokens
            self.running.append(seq)
            scheduled.append((seq, new))
            work.add(new, seq.computed, prefill=True)
            budget -= new
        return budget

    def _preempt(self, seq: EngineSequence) -> None:
        self._release(seq)
        seq.computed = 0
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def _release(self, seq: EngineSequence) -> None:
        self.kv.release(seq.shared_hashes, seq.private_blocks)
        seq.shared_hashes = []
        seq.private_blocks = 0

    def _complete(self, scheduled: list[tuple[EngineSequence, int]], now: float) -> None:
        bs = self.config.block_size
        done: list[EngineSequence] = []
        for seq, new in scheduled:
            if seq.aborted:
                continue
            seq.computed += new
            if seq.computed >= seq.prefill_target:
                seq.output_count += 1
                if seq.first_token_time < 0:
                    seq.first_token_time = now
                if seq.on_token is not None:
                    seq.on_token(seq, now)
                seq.last_token_time = now
                seq.notify()
            full = seq.computed // bs
            if full > len(seq.shared_hashes):
                for h in seq.block_hashes(full, bs, stable=self.config.stable_hashes)[
                    len(seq.shared_hashes) :
                ]:
                    self.kv.register(h)
                    seq.private_blocks -= 1
                    seq.shared_hashes.append(h)
            if seq.output_count >= seq.target_len:
                done.append(seq)
        for seq in done:
            self.running.remove(seq)
            self._release(seq)
            seq.finished = True
            if self.on_finish is not None:
                self.on_finish(seq)
            seq.notify()
