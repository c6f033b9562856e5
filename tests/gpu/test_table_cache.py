"""The table cache's policy (_table_cache.TableCache): kept from a key's second request,
least recently used dropped first, within its byte limit. Runs on the CPU with NumPy
arrays standing in for device arrays."""
import numpy as np
import pytest

from sketchcore._cuda._table_cache import TableCache, _limit_from_env


def _request(cache, key, nbytes):
    """What a caller does: take the kept array, or build one and offer it."""
    kept = cache.get(key)
    if kept is not None:
        return kept, False
    array = np.full(nbytes, hash(key) % 251, dtype=np.uint8)
    cache.offer(key, array)
    return array, True


def test_kept_from_the_second_request_on():
    cache = TableCache(1000)
    built = [_request(cache, "a", 100)[1] for _ in range(4)]
    assert built == [True, True, False, False]
    assert len(cache) == 1 and cache.nbytes == 100
    assert _request(cache, "b", 100)[1] and len(cache) == 1


def test_least_recently_used_dropped_first():
    cache = TableCache(300)
    for key in "abc":
        for _ in range(2):
            _request(cache, key, 100)
    assert len(cache) == 3
    _request(cache, "a", 100)                  # a is now the most recently used
    for _ in range(2):
        _request(cache, "d", 100)
    assert _request(cache, "a", 100)[1] is False
    assert _request(cache, "b", 100)[1] is True     # b was the least recently used
    assert cache.nbytes <= 300


def test_arrays_larger_than_the_limit_are_never_kept():
    cache = TableCache(99)
    assert [_request(cache, "a", 100)[1] for _ in range(3)] == [True] * 3
    assert len(cache) == 0
    cache.limit = 0
    assert [_request(cache, "b", 1)[1] for _ in range(3)] == [True] * 3


def test_keys_seen_once_are_forgotten_beyond_remember():
    cache = TableCache(1000, remember=2)
    for key in "abc":
        _request(cache, key, 10)
    assert _request(cache, "a", 10)[1] and len(cache) == 0    # a was forgotten: first again
    assert _request(cache, "c", 10)[1] and len(cache) == 1    # c was remembered
    cache.clear()
    assert len(cache) == 0 and _request(cache, "c", 10)[1] and len(cache) == 0


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("SKETCHCORE_SLOT_CACHE_MB", "1.5")
    assert _limit_from_env("SKETCHCORE_SLOT_CACHE_MB", 256) == 3 << 19
    monkeypatch.delenv("SKETCHCORE_SLOT_CACHE_MB")
    assert _limit_from_env("SKETCHCORE_SLOT_CACHE_MB", 256) == 256 << 20
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("SKETCHCORE_SLOT_CACHE_MB", bad)
        with pytest.raises(ValueError, match="SKETCHCORE_SLOT_CACHE_MB.*MiB"):
            _limit_from_env("SKETCHCORE_SLOT_CACHE_MB", 256)
