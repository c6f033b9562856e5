"""The one RNG: Random123 known answers, purity in (seed, stream, index), distributions."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from sketchcore import random as skr

KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(v) for v in skr.philox4x32(counter, key)) == expected


def test_word_layout_matches_raw_philox():
    seed, stream = 0x0123456789ABCDEF, skr.make_stream("sign", term=7, role=3)
    words = skr.random_words(seed, stream, 0, 12)
    for block in range(3):
        ctr = (block, 0, stream & 0xFFFFFFFF, stream >> 32)
        raw = skr.philox4x32(ctr, (seed & 0xFFFFFFFF, seed >> 32))
        np.testing.assert_array_equal(words[4 * block:4 * block + 4], raw)


@given(start=st.integers(0, 2 ** 40), count=st.integers(0, 300), cut=st.integers(0, 300))
def test_any_sub_block_equals_the_whole(start, count, cut):
    cut = min(cut, count)
    stream = skr.make_stream("gaussian", 2)
    whole = skr.gaussian(5, stream, start, count)
    left = skr.gaussian(5, stream, start, cut)
    right = skr.gaussian(5, stream, start + cut, count - cut)
    np.testing.assert_array_equal(whole, np.concatenate([left, right]))
    w = skr.random_words(5, stream, start, count)
    np.testing.assert_array_equal(w[cut:], skr.random_words(5, stream, start + cut, count - cut))


def test_large_fill_is_thread_invariant():
    # 2**17 entries take the parallel path; slices of it take the serial one.
    n = 1 << 17
    whole = skr.signs(11, 1, 0, n)
    parts = np.concatenate([skr.signs(11, 1, s, 1000) for s in range(0, n, 1000)])
    np.testing.assert_array_equal(whole, parts[:n])


def test_batched_gaussian_fill_equals_the_scalar_entries():
    from sketchcore._cpu._random import gaussian_at
    stream = skr.make_stream("gaussian", 3)
    # Offsets that cut the 256-entry batches and the fill's work pieces mid-way.
    for start, count in [(0, 5), (3, 700), (255, 3), (16381, 9), (5, 40000), (2 ** 40 + 7, 1000)]:
        whole = skr.gaussian(9, stream, start, count, dtype=np.float32)
        index = np.arange(start, start + count, dtype=np.uint64)
        np.testing.assert_array_equal(whole, gaussian_at(9, stream, index))


def test_float32_is_rounded_float64():
    a64 = skr.gaussian(3, 9, 100, 5000, dtype=np.float64)
    a32 = skr.gaussian(3, 9, 100, 5000, dtype=np.float32)
    np.testing.assert_array_equal(a64.astype(np.float32), a32)


def test_streams_and_seeds_are_independent():
    a = skr.gaussian(1, skr.make_stream("sklinear", 0, 0), 0, 20000)
    b = skr.gaussian(1, skr.make_stream("sklinear", 1, 0), 0, 20000)
    c = skr.gaussian(2, skr.make_stream("sklinear", 0, 0), 0, 20000)
    # Independent N(0,1) samples: correlation ~ N(0, 1/n); 6 sigma bound.
    bound = 6 / np.sqrt(a.size)
    assert abs(np.corrcoef(a, b)[0, 1]) < bound
    assert abs(np.corrcoef(a, c)[0, 1]) < bound


def test_distribution_moments():
    n = 400_000
    g = skr.gaussian(42, 1, 0, n)
    # Standard errors: mean 1/sqrt(n), variance sqrt(2/n), 4th moment sqrt(96/n); 6 sigma.
    assert abs(g.mean()) < 6 / np.sqrt(n)
    assert abs(g.var() - 1) < 6 * np.sqrt(2 / n)
    assert abs((g ** 4).mean() - 3) < 6 * np.sqrt(96 / n)
    u = skr.uniform(42, 2, 0, n)
    assert u.min() > 0 and u.max() <= 1
    assert abs(u.mean() - 0.5) < 6 * np.sqrt(1 / 12 / n)
    s = skr.signs(42, 3, 0, n, scale=0.5)
    assert set(np.unique(s)) == {-0.5, 0.5}
    assert abs(s.mean()) < 6 * 0.5 / np.sqrt(n)
    # Uniform histogram: chi-square with 15 dof; 99.999% quantile ~ 49.
    counts = np.histogram(u, bins=16, range=(0, 1))[0]
    chi2 = ((counts - n / 16) ** 2 / (n / 16)).sum()
    assert chi2 < 49


def test_resolve_seed():
    assert skr.resolve_seed(np.int64(7)) == 7
    assert skr.resolve_seed(2 ** 64 - 1) == 2 ** 64 - 1
    drawn = {skr.resolve_seed(None) for _ in range(4)}
    assert len(drawn) == 4


@pytest.mark.parametrize("bad,exc", [(1.5, TypeError), ("3", TypeError), (True, TypeError),
                                     (-1, ValueError), (2 ** 64, ValueError)])
def test_resolve_seed_rejects(bad, exc):
    with pytest.raises(exc, match="seed"):
        skr.resolve_seed(bad)


def test_make_stream_validation():
    assert skr.make_stream("sign", 1, 2) == (2 << 48) | (1 << 16) | 2
    with pytest.raises(ValueError, match="kind"):
        skr.make_stream("nope")
    with pytest.raises(ValueError, match="role"):
        skr.make_stream("sign", 0, 2 ** 16)
    with pytest.raises(TypeError, match="dtype"):
        skr.gaussian(1, 1, 0, 3, dtype=np.int32)
