"""A paged KV cache of fixed capacity with prefix caching by chained block hashes.

Modelled on vLLM v1's block pool: full blocks are registered under the hash of their
tokens chained with the previous block's hash, shared between sequences by reference
count, and kept (evictable, least recently freed first) after their last user is done, so
a session that resends its history finds its prefix cached until memory pressure evicts it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["KVCache"]


class KVCache:
    """Block accounting only: which prefix hashes are resident, and how many blocks are free."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        # hash -> number of running sequences referencing that block
        self._refs: dict[int, int] = {}
        # cached blocks nobody references, oldest-freed first (the eviction order)
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._private = 0  # blocks held by sequences and not (yet) registered under a hash
        self.evictions = 0

    @property
    def free_blocks(self) -> int:
        """Blocks holding nothing at all (evictable cached blocks not included)."""
        return self.num_blocks - self._private - len(self._refs)

    @property
    def used_blocks(self) -> int:
        """Blocks some running sequence needs: what vLLM reports as KV usage."""
        return self._private + len(self._refs) - len(self._evictable)

    def usage(self) -> float:
        """Fraction of blocks in use by running sequences, 0..1."""
        return self.used_blocks / self.num_blocks

    def cached_prefix(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are resident."""
        n = 0
        for h in hashes:
            if h not in self._refs:
                break
            n += 1
        return n

    def acquire(self, hashes: Sequence[int]) -> None:
        """Reference resident blocks (a prefix hit); they stop being evictable."""
        for h in hashes:
            count = self._refs[h]
            if count == 0:
                del self._evictable[h]
            self._refs[h] = count + 1

    def allocate(self, count: int) -> bool:
        """Take `count` private blocks, evicting unreferenced cached blocks if needed."""
        if count <= 0:
            return True
        shortfall = count - self.free_blocks
        if shortfall > len(self._evictable):
            return False
        for _ in range(max(0, shortfall)):
            h, _none = self._evictable.popitem(last=False)
            del self._refs[h]
            self.evictions += 1
        self._private += count
        return True

    def register(self, block_hash: int) -> None:
        """A private block became full: publish it under its hash for others to share."""
        self._private -= 1
        count = self._refs.get(block_hash)
        if count is None:
            self._refs[block_hash] = 1
        else:
            # Another sequence computed the identical block first; keep one copy.
            if count == 0:
                del self._evictable[block_hash]
            self._refs[block_hash] = count + 1

    def release(self, hashes: Sequence[int], private: int) -> None:
        """A sequence is done with its blocks; its registered ones stay cached until evicted."""
        self._private -= private
        # Tail blocks first, so that eviction takes the end of a prefix before its start.
        for h in reversed(hashes):
            count = self._refs[h] - 1
            self._refs[h] = count
            if count == 0:
                self._evictable[h] = None
