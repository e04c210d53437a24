"""Specification of the simulator's paged KV cache: prefix hits, references, eviction order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from loadgen.sim.kv_cache import KVCache


def compute(kv: KVCache, hashes: Sequence[int]) -> None:
    """What a sequence does: take private blocks, fill them, publish each under its hash."""
    assert kv.allocate(len(hashes))
    for h in hashes:
        kv.register(h)


def cache_then_free(kv: KVCache, hashes: Sequence[int]) -> None:
    """A finished sequence: its blocks stay cached but nobody references them any more."""
    compute(kv, hashes)
    kv.release(hashes, 0)


def test_cached_prefix_counts_leading_resident_blocks_only() -> None:
    kv = KVCache(num_blocks=8, block_size=16)
    cache_then_free(kv, [1, 2, 3])

    assert kv.cached_prefix([1, 2, 3, 4]) == 3
    assert kv.cached_prefix([1, 2]) == 2
    assert kv.cached_prefix([1, 9, 3]) == 1  # a gap ends the prefix even if later blocks exist
    assert kv.cached_prefix([9, 1, 2]) == 0
    assert kv.cached_prefix([]) == 0


def test_running_sequences_blocks_count_as_hits_too() -> None:
    kv = KVCache(num_blocks=8, block_size=16)
    compute(kv, [1, 2])  # still referenced by the sequence that computed them

    assert kv.cached_prefix([1, 2, 3]) == 2


def test_acquired_blocks_are_not_evictable() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [1, 2])
    kv.acquire([1, 2])  # a new sequence hit this prefix

    assert not kv.allocate(3)  # only the 2 empty blocks are available
    assert kv.cached_prefix([1, 2]) == 2
    assert kv.evictions == 0
    assert kv.allocate(2)
    assert kv.cached_prefix([1, 2]) == 2


def test_released_acquired_blocks_become_evictable_again() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [1, 2])
    kv.acquire([1, 2])
    kv.release([1, 2], 0)

    assert kv.allocate(4)
    assert kv.cached_prefix([1, 2]) == 0
    assert kv.evictions == 2


def test_blocks_shared_by_two_sequences_stay_until_both_release() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    compute(kv, [1, 2])
    kv.acquire([1, 2])  # a second sequence shares them
    kv.release([1, 2], 0)  # the first one finishes

    assert not kv.allocate(3)
    kv.release([1, 2], 0)
    assert kv.allocate(3)


def test_allocate_uses_empty_blocks_before_evicting() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [1, 2])

    assert kv.allocate(2)
    assert kv.evictions == 0
    assert kv.cached_prefix([1, 2]) == 2


def test_allocate_evicts_least_recently_freed_blocks_first() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [10, 11])  # freed first
    cache_then_free(kv, [20, 21])  # freed later

    assert kv.allocate(2)
    assert kv.cached_prefix([10, 11]) == 0
    assert kv.cached_prefix([20, 21]) == 2
    assert kv.evictions == 2


def test_reusing_a_prefix_makes_it_recently_freed() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [10, 11])
    cache_then_free(kv, [20, 21])
    kv.acquire([10, 11])  # session 10 comes back and finishes again
    kv.release([10, 11], 0)

    assert kv.allocate(2)
    assert kv.cached_prefix([10, 11]) == 2
    assert kv.cached_prefix([20, 21]) == 0


def test_eviction_takes_the_tail_of_a_released_prefix_before_its_head() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [1, 2, 3, 4])

    assert kv.allocate(1)
    assert kv.cached_prefix([1, 2, 3, 4]) == 3
    assert kv.allocate(2)
    assert kv.cached_prefix([1, 2, 3, 4]) == 1


def test_failed_allocate_changes_nothing() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    cache_then_free(kv, [1, 2])
    assert kv.allocate(1)
    before = (kv.free_blocks, kv.used_blocks, kv.evictions, kv.usage())

    assert not kv.allocate(4)  # 1 empty + 2 evictable < 4

    assert (kv.free_blocks, kv.used_blocks, kv.evictions, kv.usage()) == before
    assert kv.cached_prefix([1, 2]) == 2
    assert kv.allocate(3)  # exactly what was available is still available


def test_allocate_of_nothing_always_succeeds() -> None:
    kv = KVCache(num_blocks=1, block_size=16)
    assert kv.allocate(1)

    assert kv.allocate(0)
    assert not kv.allocate(1)


def test_register_keeps_one_copy_of_identical_blocks() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    assert kv.allocate(2)  # two sequences compute the same block at the same time
    kv.register(7)
    kv.register(7)

    assert kv.used_blocks == 1
    assert kv.free_blocks == 3
    kv.release([7], 0)
    assert not kv.allocate(4)  # the other sequence still references it
    kv.release([7], 0)
    assert kv.allocate(4)


def test_register_of_an_evictable_block_revives_it() -> None:
    kv = KVCache(num_blocks=3, block_size=16)
    cache_then_free(kv, [7])
    assert kv.allocate(1)
    kv.register(7)  # recomputed while its cached copy was still resident

    assert kv.used_blocks == 1
    assert kv.free_blocks == 2
    assert kv.allocate(2)
    assert not kv.allocate(1)  # block 7 is referenced again, so not evictable
    assert kv.cached_prefix([7]) == 1


@pytest.mark.parametrize(
    ("private", "referenced", "cached_free", "expected"),
    [(0, 0, 0, 0.0), (2, 0, 0, 0.2), (0, 3, 0, 0.3), (0, 0, 4, 0.0), (1, 2, 5, 0.3)],
)
def test_usage_counts_only_referenced_and_private_blocks(
    private: int, referenced: int, cached_free: int, expected: float
) -> None:
    kv = KVCache(num_blocks=10, block_size=16)
    cache_then_free(kv, range(100, 100 + cached_free))
    compute(kv, range(200, 200 + referenced))
    assert kv.allocate(private)

    assert kv.used_blocks == private + referenced
    assert kv.usage() == pytest.approx(expected)
    assert kv.free_blocks == 10 - private - referenced - cached_free
