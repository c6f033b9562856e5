"""Sketch operators: products against their own dense form, entry definitions against a plain
NumPy reference built from ``sketchcore.random`` words (the contract the CUDA kernels
reproduce), isometry statistics, seeding, thread-count invariance and input validation.

Tolerances: a computed sum of k terms obeys |fl(s) - s| <= gamma_k * sum|terms| with
gamma_k ~ k * eps (Higham, Thm 3.5), so products are compared elementwise against a float64
reference with bound ``(k + 2) * eps * (|S| @ |A|)``; statistics use k-sigma bounds from the
variance of the estimator.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.linalg import hadamard
from threadpoolctl import threadpool_info, threadpool_limits

import sketchcore as sc
from sketchcore import _cpu
from sketchcore import random as skr

KINDS = {
    "gaussian": lambda d, m, seed=0, dtype="float32": sc.GaussianSketch(d, m, seed=seed,
                                                                          dtype=dtype),
    "sign": lambda d, m, seed=0, dtype="float32": sc.SignSketch(d, m, seed=seed, dtype=dtype),
    "sparse3": lambda d, m, seed=0, dtype="float32": sc.SparseSignSketch(
        d, m, nnz=min(3, d), seed=seed, dtype=dtype),
    "sparse8": lambda d, m, seed=0, dtype="float32": sc.SparseSignSketch(
        d, m, nnz=min(8, d), seed=seed, dtype=dtype),
    "count": lambda d, m, seed=0, dtype="float32": sc.CountSketch(d, m, seed=seed, dtype=dtype),
    "srht": lambda d, m, seed=0, dtype="float32": sc.SRHT(d, m, seed=seed, dtype=dtype),
}
DTYPES = [np.float32, np.float64]


def _bound(S_dense, A, out_dtype, op_dtype, axis_len):
    """Elementwise error bound of S @ A computed in ``out_dtype`` with entries generated in
    that dtype, against the float64 product with the ``op_dtype`` entries of ``to_dense``."""
    mag = np.abs(S_dense.astype(np.float64)) @ np.abs(A.astype(np.float64))
    eps = np.finfo(out_dtype).eps
    # Entries regenerated in another precision differ from to_dense() by one rounding.
    entry = np.finfo(op_dtype).eps if np.dtype(op_dtype) != np.dtype(out_dtype) else 0.0
    return ((axis_len + 2) * eps + entry) * mag + np.finfo(out_dtype).tiny


def _check_close(got, S_dense, A, op_dtype):
    ref = S_dense.astype(np.float64) @ A.astype(np.float64)
    out_dtype = np.result_type(op_dtype, A.dtype)
    assert got.dtype == out_dtype
    assert got.shape == ref.shape
    bound = _bound(S_dense, A, out_dtype, op_dtype, S_dense.shape[1])
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max err {err.max()} vs bound {bound.max()}"


def _layouts(A):
    """The same values as C, Fortran, strided and read-only arrays."""
    fortran = np.asfortranarray(A)
    big = np.zeros((A.shape[0] * 2, A.shape[1] * 3), dtype=A.dtype)
    big[::2, ::3] = A
    strided = big[::2, ::3]
    ro = A.copy()
    ro.setflags(write=False)
    return {"C": A, "F": fortran, "strided": strided, "readonly": ro}


# ----------------------------------------------------------------------------------------
# Products equal the operator's own dense form.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("op_dtype", DTYPES)
@pytest.mark.parametrize("a_dtype", DTYPES)
def test_left_right_vector_adjoint_match_dense(kind, op_dtype, a_dtype):
    d, m, n = 24, 150, 9
    S = KINDS[kind](d, m, seed=11, dtype=op_dtype)
    D = S.to_dense()
    assert D.shape == (d, m) and D.dtype == op_dtype
    rng = np.random.default_rng(1)
    A = rng.standard_normal((m, n)).astype(a_dtype)
    for name, X in _layouts(A).items():
        _check_close(S @ X, D, X, op_dtype)                       # left
        _check_close((X.T @ S.T).T, D, X, op_dtype)               # right
        _check_close(S.apply(X, axis=0), D, X, op_dtype)
        _check_close(S.apply(X.T, axis=1).T, D, X, op_dtype)
    x = A[:, 0].copy()
    _check_close((S @ x)[:, None], D, x[:, None], op_dtype)      # vector
    _check_close((x @ S.T)[:, None], D, x[:, None], op_dtype)
    B = rng.standard_normal((d, 5)).astype(a_dtype)
    _check_close(S.T @ B, D.T, B, op_dtype)                      # adjoint
    _check_close((B.T @ S).T, D.T, B, op_dtype)
    _check_close(S.T @ B[:, 0], D.T, B[:, 0], op_dtype)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_apply_any_axis_nd(kind):
    d, m = 8, 40
    S = KINDS[kind](d, m, seed=5, dtype=np.float64)
    D = S.to_dense()
    X = np.random.default_rng(2).standard_normal((3, m, 4, 5))
    for axis in range(4):
        Xa = np.moveaxis(X, 1, axis)
        got = S.apply(Xa, axis=axis)
        ref = np.moveaxis(np.tensordot(D, Xa, axes=([1], [axis])), 0, axis)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        neg = S.apply(Xa, axis=axis - 4)
        np.testing.assert_array_equal(neg, got)
    # matmul broadcasting: (..., m, n) on the left, (..., m) on the right.
    np.testing.assert_allclose(S @ X[:, :, 0, :], D @ X[:, :, 0, :], rtol=1e-12, atol=1e-12)
    Y = np.moveaxis(X, 1, -1)
    np.testing.assert_allclose(Y @ S.T, Y @ D.T, rtol=1e-12, atol=1e-12)
    Z = np.random.default_rng(3).standard_normal((2, d, 3))
    np.testing.assert_allclose(S.T @ Z, D.T @ Z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_large_parallel_path_matches_dense(kind):
    # Sizes above every kernel's parallel threshold, uneven against the block sizes.
    d, m, n = 260, 3001, 300
    S = KINDS[kind](d, m, seed=21, dtype=np.float32)
    D = S.to_dense()
    A = np.random.default_rng(4).standard_normal((m, n)).astype(np.float32)
    _check_close(S @ A, D, A, np.float32)
    _check_close((A.T @ S.T).T, D, A, np.float32)


# ----------------------------------------------------------------------------------------
# Entry definitions against a plain NumPy reference (contracts.md).
# ----------------------------------------------------------------------------------------
def _words(seed, kind, count, role=0):
    return skr.random_words(seed, skr.make_stream(kind, 0, role), 0, count)


def _gaussian_reference(words):
    """The Gaussian formula of sketchcore/random.py evaluated with NumPy's float64 math from
    the same Philox words: entries 4c, 4c+1 from words (0, 1), 4c+2, 4c+3 from (2, 3).
    Returns the values and each entry's Box-Muller radius r (|value| <= r)."""
    w = words.reshape(-1, 4).astype(np.uint64)
    out = np.empty(w.shape, dtype=np.float64)
    radius = np.empty(w.shape, dtype=np.float64)
    for pair in (0, 1):
        wu, wa = w[:, 2 * pair], w[:, 2 * pair + 1]
        # u = fma(float(wu), 2^-32, 2^-33): the product is exact, one rounding to float32.
        u = (wu.astype(np.float32).astype(np.float64) * 2.0 ** -32 + 2.0 ** -33)
        r = np.sqrt(-2.0 * np.log(u.astype(np.float32).astype(np.float64)))
        q = ((wa + 2 ** 29) % 2 ** 32) >> 30
        s = ((wa - q * 2 ** 30) % 2 ** 32).astype(np.uint32).view(np.int32)
        x = s.astype(np.float32).astype(np.float64) * (2 * np.pi / 2 ** 32)
        theta = x + q.astype(np.float64) * (np.pi / 2)
        out[:, 2 * pair], out[:, 2 * pair + 1] = r * np.cos(theta), r * np.sin(theta)
        radius[:, 2 * pair] = radius[:, 2 * pair + 1] = r
    return out.ravel(), radius.ravel()


def test_gaussian_formula_against_float64_math():
    seed, stream = 123, skr.make_stream("gaussian")
    n = 1 << 16
    g = skr.gaussian(seed, stream, 0, n, dtype=np.float32)
    ref, radius = _gaussian_reference(skr.random_words(seed, stream, 0, n))
    # float32 polynomials: a few ulps of the pair's radius r (|g| <= r).
    tol = 4 * np.finfo(np.float32).eps * np.maximum(radius, 1.0)
    assert np.all(np.abs(g - ref) <= tol), np.abs(g - ref).max()
    # The batched generator of the kernels equals the scalar one bit for bit, at any offset.
    for start in (0, 3, 257):
        blk = _cpu.dense_block(0, seed, stream, 1000, 0, 1, start, start + 700, 1.0,
                               np.float32)[0]
        np.testing.assert_array_equal(blk, g[start:start + 700])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_entries(dtype):
    d, m, seed = 7, 33, 2 ** 63 + 5
    S = sc.GaussianSketch(d, m, seed=seed, dtype=dtype)
    ref = skr.gaussian(seed, skr.make_stream("gaussian", 0, 0), 0, d * m, dtype=dtype,
                       scale=1 / np.sqrt(d)).reshape(d, m)
    np.testing.assert_array_equal(S.to_dense(), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sign_entries(dtype):
    d, m, seed = 9, 31, 77
    S = sc.SignSketch(d, m, seed=seed, dtype=dtype)
    top = _words(seed, "sign", d * m) >> 31
    ref = np.where(top == 1, -1 / np.sqrt(d), 1 / np.sqrt(d)).astype(dtype).reshape(d, m)
    np.testing.assert_array_equal(S.to_dense(), ref)


@pytest.mark.parametrize("d,nnz", [(10, 1), (10, 3), (16, 8), (7, 7)])
def test_sparse_sign_entries(d, nnz):
    m, seed = 45, 4242
    S = sc.SparseSignSketch(d, m, nnz=nnz, seed=seed, dtype=np.float64)
    w = _words(seed, "sparse_sign", 4 * m * nnz).reshape(m, nnz, 4).astype(np.uint64)
    ref = np.zeros((d, m))
    for j in range(m):
        for t in range(nnz):
            lo, hi = t * d // nnz, (t + 1) * d // nnz
            row = lo + ((int(w[j, t, 0]) * (hi - lo)) >> 32)
            assert lo <= row < hi
            ref[row, j] = (-1 if w[j, t, 1] >> 31 else 1) / np.sqrt(nnz)
    np.testing.assert_array_equal(S.to_dense(), ref)
    assert np.all((S.to_dense() != 0).sum(axis=0) == nnz)
    if nnz == 1:
        np.testing.assert_array_equal(sc.CountSketch(d, m, seed=seed, dtype=np.float64)
                                      .to_dense(), ref)


@pytest.mark.parametrize("d,m", [(1, 1), (3, 5), (12, 64), (20, 100), (33, 33)])
def test_srht_entries(d, m):
    seed = 99
    S = sc.SRHT(d, m, seed=seed, dtype=np.float64)
    p = 1 << (m - 1).bit_length()
    keys = _words(seed, "srht", p, role=1)
    rows = np.array(sorted(range(p), key=lambda r: (int(keys[r]), r))[:d])
    np.testing.assert_array_equal(S.rows, rows)
    signs = np.where(_words(seed, "srht", m) >> 31 == 1, -1.0, 1.0)
    ref = hadamard(p)[rows][:, :m] * signs / np.sqrt(d)
    np.testing.assert_array_equal(S.to_dense(), ref)


def test_srht_rows_with_tied_keys_follow_index_order(monkeypatch):
    # Ties in the keys are broken by the row index; force ties through the word source.
    keys = np.array([5, 1, 5, 1, 0, 5, 9, 5], dtype=np.uint32)
    monkeypatch.setattr(sc.operators._random, "random_words",
                        lambda seed, stream, start, count: keys[start:start + count].copy())
    assert list(sc.SRHT(4, 8, seed=3).rows) == [4, 1, 3, 0]
    assert list(sc.SRHT(6, 8, seed=3).rows) == [4, 1, 3, 0, 2, 5]
    assert list(sc.SRHT(8, 8, seed=3).rows) == [4, 1, 3, 0, 2, 5, 7, 6]


# ----------------------------------------------------------------------------------------
# Isometry in expectation: E ||S x||^2 = ||x||^2 and E[S^T S] = I.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_isometry_in_expectation(kind):
    d, m, seeds = 16, 64, 400
    rng = np.random.default_rng(7)
    x = rng.standard_normal(m)
    x /= np.linalg.norm(x)
    sq = np.array([np.sum((KINDS[kind](d, m, seed=s, dtype=np.float64) @ x) ** 2)
                   for s in range(seeds)])
    # CLT on the mean of i.i.d. estimates: 5 standard errors from the sample variance.
    se = sq.std(ddof=1) / np.sqrt(seeds)
    assert abs(sq.mean() - 1.0) < 5 * se
    if kind == "gaussian":
        # Var ||Sx||^2 = 2/d for Gaussian S; chi-square-like spread, 5 sigma on the variance.
        var, var_se = sq.var(ddof=1), 2 / d * np.sqrt(2 / (seeds - 1)) * np.sqrt(1 + 6 / d)
        assert abs(var - 2 / d) < 5 * var_se


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_expected_gram_is_identity(kind):
    d, m, seeds = 8, 16, 300
    G = np.stack([(lambda D: D.T @ D)(KINDS[kind](d, m, seed=1000 + s,
                                                  dtype=np.float64).to_dense())
                  for s in range(seeds)])
    mean, se = G.mean(axis=0), G.std(axis=0, ddof=1) / np.sqrt(seeds)
    err = np.abs(mean - np.eye(m))
    # Entries with zero variance (e.g. the diagonal of sign kinds) must be exact.
    assert np.all(err <= 5 * se + 1e-12)


# ----------------------------------------------------------------------------------------
# Seeds, threads, tiles.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_seed_none_is_recorded_and_reproducible(kind):
    S = KINDS[kind](6, 20, seed=None)
    assert isinstance(S.seed, int) and 0 <= S.seed < 2 ** 64
    again = KINDS[kind](6, 20, seed=S.seed)
    np.testing.assert_array_equal(S.to_dense(), again.to_dense())
    assert str(S.seed) in repr(S)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_same_different_seed_differs(kind):
    A = np.random.default_rng(0).standard_normal((200, 3))
    S1, S2, S3 = (KINDS[kind](20, 200, seed=s, dtype=np.float64) for s in (5, 5, 6))
    np.testing.assert_array_equal(S1 @ A, S2 @ A)
    assert not np.array_equal(S1.to_dense(), S3.to_dense())
    assert not np.allclose(S1 @ A, S3 @ A)


def _openmp_controlled():
    return any(info.get("user_api") == "openmp" for info in threadpool_info())


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_invariance(kind, dtype):
    assert _openmp_controlled(), "threadpoolctl must see the OpenMP runtime of the kernels"
    # Above every kernel's parallel threshold (CountSketch: m * n >= 2**22) and with
    # several work items everywhere (sparse left: m >= 4 * 4096 gives four parts).
    d, m, n = 100, 25000, 200
    S = KINDS[kind](d, m, seed=8, dtype=dtype)
    rng = np.random.default_rng(5)
    A = rng.standard_normal((m, n)).astype(dtype)
    At = np.ascontiguousarray(A.T)
    results = {}
    for threads in (1, 2, 3):
        with threadpool_limits(limits=threads, user_api="openmp"):
            results[threads] = (S @ A, At @ S.T, S.T @ A[:d])
    for threads in (2, 3):
        for got, ref in zip(results[threads], results[1]):
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("kernel,kind", [("gaussian", 0), ("sign", 1)])
def test_tile_size_changes_rounding_only(kernel, kind):
    d, m, n, seed = 40, 1000, 17, 3
    stream = skr.make_stream(kernel, 0, 0)
    A = np.random.default_rng(6).standard_normal((m, n)).astype(np.float32)
    D = _cpu.dense_block(kind, seed, stream, m, 0, d, 0, m, 1 / np.sqrt(d), np.float32)
    left, right = getattr(_cpu, f"{kernel}_left"), getattr(_cpu, f"{kernel}_right")
    At = np.ascontiguousarray(A.T)
    for tile in (1, 64, 100, 333, 1000, 5000):
        _check_close(left(A, d, seed, stream, tile), D, A, np.float32)
        _check_close(right(At, d, seed, stream, tile).T, D, A, np.float32)
    # Sub-blocks of the operator, drawn alone, are the blocks of the whole.
    for r0, r1, j0, j1 in [(0, 1, 0, 1), (3, 17, 5, 999), (39, 40, 0, 1000), (10, 20, 257, 258)]:
        np.testing.assert_array_equal(
            _cpu.dense_block(kind, seed, stream, m, r0, r1, j0, j1, 1 / np.sqrt(d), np.float32),
            D[r0:r1, j0:j1])


# ----------------------------------------------------------------------------------------
# Kernels on their own.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,n", [(1, 3), (2, 1), (16, 5), (256, 33), (2048, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fwht_rows_matches_hadamard(p, n, dtype):
    X = np.random.default_rng(p).standard_normal((p, n)).astype(dtype)
    ref = hadamard(p).astype(np.float64) @ X.astype(np.float64)
    got = _cpu.fwht_rows(X.copy())
    bound = (np.log2(p) + 2) * np.finfo(dtype).eps * (np.abs(hadamard(p)) @ np.abs(X))
    assert np.all(np.abs(got - ref) <= bound + 1e-30)


def test_fwht_rows_rejects():
    with pytest.raises(ValueError, match="power-of-two"):
        _cpu.fwht_rows(np.zeros((6, 2)))
    ro = np.zeros((4, 2))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _cpu.fwht_rows(ro)
    with pytest.raises(TypeError, match="C-contiguous"):
        _cpu.fwht_rows(np.zeros((4, 3), order="F"))


def test_kernels_reject_wrong_arrays():
    with pytest.raises(TypeError, match="gaussian_left"):
        _cpu.gaussian_left(np.zeros((4, 3), dtype=np.int64), 2, 0, 0)
    with pytest.raises(TypeError, match="sparse_sign_right"):
        _cpu.sparse_sign_right(np.zeros(4), 2, 1, 0, 0)
    with pytest.raises(ValueError, match="nnz"):
        _cpu.sparse_sign_left(np.zeros((4, 3)), 2, 3, 0, 0)
    with pytest.raises(ValueError, match="rows"):
        _cpu.srht_left(np.zeros((4, 3)), np.array([4]), 0, 0)


# ----------------------------------------------------------------------------------------
# Validation of every public entry point.
# ----------------------------------------------------------------------------------------
ALL_CLASSES = [sc.GaussianSketch, sc.SignSketch, sc.SparseSignSketch, sc.CountSketch, sc.SRHT]


@pytest.mark.parametrize("cls", ALL_CLASSES)
@pytest.mark.parametrize("arg,bad,exc", [
    ("d", 0, ValueError), ("d", -3, ValueError), ("d", 2.0, TypeError), ("d", True, TypeError),
    ("d", "4", TypeError), ("m", 0, ValueError), ("m", 3.5, TypeError), ("m", None, TypeError),
    ("seed", 1.5, TypeError), ("seed", "7", TypeError), ("seed", -1, ValueError),
    ("seed", 2 ** 64, ValueError), ("seed", True, TypeError),
    ("dtype", np.int32, TypeError), ("dtype", np.complex64, TypeError),
    ("dtype", "float16", TypeError), ("dtype", object, TypeError), ("dtype", "nope", TypeError),
])
def test_constructor_rejects(cls, arg, bad, exc):
    kwargs = dict(d=4, m=10, seed=0, dtype="float32")
    kwargs[arg] = bad
    with pytest.raises(exc, match=arg):
        cls(**kwargs)


@pytest.mark.parametrize("nnz,exc", [(0, ValueError), (5, ValueError), (2.0, TypeError),
                                     ("2", TypeError)])
def test_sparse_nnz_rejected(nnz, exc):
    with pytest.raises(exc, match="nnz"):
        sc.SparseSignSketch(4, 10, nnz=nnz)


def test_srht_d_larger_than_m_rejected():
    with pytest.raises(ValueError, match="d <= m"):
        sc.SRHT(11, 10)
    assert sc.SRHT(10, 10).shape == (10, 10)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bad", [np.zeros((10, 2), dtype=np.int64),
                                 np.zeros((10, 2), dtype=np.complex128),
                                 np.zeros((10, 2), dtype=object),
                                 np.zeros((10, 2), dtype=bool),
                                 np.zeros((10, 2), dtype=np.float16)])
def test_array_dtype_rejected(kind, bad):
    S = KINDS[kind](4, 10)
    for fn in (lambda: S @ bad, lambda: bad.T @ S.T, lambda: S.apply(bad, axis=0),
               lambda: S.T @ bad[:4]):
        with pytest.raises(TypeError, match="dtype"):
            fn()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_shape_errors(kind):
    S = KINDS[kind](4, 10)
    with pytest.raises(ValueError, match=r"A.shape\[0\] = 10"):
        S @ np.zeros((9, 2))
    with pytest.raises(ValueError, match=r"A.shape\[-1\] = 10"):
        np.zeros((2, 9)) @ S.T
    with pytest.raises(ValueError, match=r"B.shape\[0\] = 4"):
        S.T @ np.zeros((5, 2))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        S @ np.float64(3.0)
    with pytest.raises(ValueError, match="axis"):
        S.apply(np.zeros((10, 2)), axis=2)
    with pytest.raises(TypeError, match="axis"):
        S.apply(np.zeros((10, 2)), axis=0.0)
    with pytest.raises(ValueError, match=r"A.shape\[1\] = 10"):
        S.apply(np.zeros((10, 2)), axis=1)
    with pytest.raises(TypeError):
        S @ S


def test_attributes_and_transpose_view():
    S = sc.SparseSignSketch(6, 30, nnz=2, seed=4, dtype="float64")
    assert S.shape == (6, 30) and S.d == 6 and S.m == 30 and S.nnz == 2
    assert S.dtype == np.float64 and S.seed == 4
    assert S.T.shape == (30, 6) and S.T.T is S and S.T.seed == 4 and S.T.dtype == np.float64
    np.testing.assert_array_equal(S.T.to_dense(), S.to_dense().T)
    assert repr(S) == "SparseSignSketch(d=6, m=30, nnz=2, seed=4, dtype='float64')"
    assert repr(sc.CountSketch(2, 3, seed=1)) == "CountSketch(d=2, m=3, seed=1, dtype='float32')"
    assert repr(S.T).endswith(".T")
    assert isinstance(S, sc.SketchOperator)
    assert sc.SRHT(3, 5, seed=0).p == 8
    # Empty data passes through with the right shape.
    assert (S @ np.zeros((30, 0))).shape == (6, 0)
    assert (np.zeros((0, 30)) @ S.T).shape == (0, 6)
    # Array-likes are accepted.
    np.testing.assert_allclose(S @ np.ones(30).tolist(), S.to_dense() @ np.ones(30))


# ----------------------------------------------------------------------------------------
# Hypothesis: shapes, dtypes, layouts and axes of every public entry point.
# ----------------------------------------------------------------------------------------
@st.composite
def _problem(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    m = draw(st.integers(1, 70))
    d = draw(st.integers(1, m if kind == "srht" else 40))
    op_dtype = draw(st.sampled_from(DTYPES))
    a_dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 12))
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly"]))
    seed = draw(st.integers(0, 2 ** 64 - 1))
    return kind, d, m, n, op_dtype, a_dtype, layout, seed


@given(_problem(), st.integers(0, 2 ** 32 - 1))
def test_fuzz_products_match_dense(problem, data_seed):
    kind, d, m, n, op_dtype, a_dtype, layout, seed = problem
    S = KINDS[kind](d, m, seed=seed, dtype=op_dtype)
    D = S.to_dense()
    A = np.random.default_rng(data_seed).standard_normal((m, n)).astype(a_dtype)
    X = _layouts(A)[layout]
    _check_close(S @ X, D, X, op_dtype)
    _check_close((X.T @ S.T).T, D, X, op_dtype)
    B = np.random.default_rng(data_seed + 1).standard_normal((d, n)).astype(a_dtype)
    _check_close(S.T @ B, D.T, B, op_dtype)


@given(_problem(), st.integers(1, 4), st.data())
def test_fuzz_apply_axis(problem, ndim, data):
    kind, d, m, _, op_dtype, a_dtype, _, seed = problem
    axis = data.draw(st.integers(-ndim, ndim - 1))
    shape = [data.draw(st.integers(1, 3)) for _ in range(ndim)]
    shape[axis] = m
    X = np.random.default_rng(seed % 1000).standard_normal(shape).astype(a_dtype)
    S = KINDS[kind](d, m, seed=seed, dtype=op_dtype)
    got = S.apply(X, axis=axis)
    ref = np.moveaxis(np.tensordot(S.to_dense().astype(np.float64), X.astype(np.float64),
                                   axes=([1], [axis % ndim])), 0, axis % ndim)
    assert got.shape == ref.shape and got.dtype == np.result_type(op_dtype, a_dtype)
    tol = (m + 2) * np.finfo(got.dtype).eps + np.finfo(op_dtype).eps
    mag = np.moveaxis(np.tensordot(np.abs(S.to_dense().astype(np.float64)), np.abs(X),
                                   axes=([1], [axis % ndim])), 0, axis % ndim)
    assert np.all(np.abs(got - ref) <= tol * mag + 1e-300)


@given(st.sampled_from(sorted(KINDS)), st.integers(1, 20), st.integers(0, 3),
       st.sampled_from([np.int8, np.int32, np.uint64, np.complex64, np.complex128, np.bool_,
                        np.float16, object]))
def test_fuzz_bad_dtypes(kind, m, n, dtype):
    S = KINDS[kind](1, m)
    bad = np.zeros((m, n), dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        S @ bad
    with pytest.raises(TypeError, match="dtype"):
        bad.T @ S.T


@given(st.sampled_from(sorted(KINDS)), st.integers(1, 20), st.integers(1, 20),
       st.integers(0, 3))
def test_fuzz_bad_shapes(kind, m, wrong, n):
    if wrong == m:
        wrong = m + 1
    S = KINDS[kind](1, m)
    with pytest.raises(ValueError, match=str(m)):
        S @ np.zeros((wrong, n))
    with pytest.raises(ValueError, match=str(m)):
        np.zeros((n, wrong)) @ S.T
    with pytest.raises(ValueError, match="axis"):
        S.apply(np.zeros((m, n)), axis=2)


@given(st.one_of(st.floats(allow_nan=False), st.text(max_size=3), st.booleans(),
                 st.integers(max_value=-1), st.integers(min_value=2 ** 64)))
def test_fuzz_bad_seeds(seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        sc.GaussianSketch(2, 3, seed=seed)


@given(st.sampled_from(ALL_CLASSES), st.integers(-3, 40), st.integers(-3, 40),
       st.integers(-2, 12))
def test_fuzz_constructor_sizes(cls, d, m, nnz):
    kwargs = dict(nnz=nnz) if cls is sc.SparseSignSketch else {}
    valid = d >= 1 and m >= 1
    if cls is sc.SparseSignSketch:
        valid = valid and 1 <= nnz <= d
    if cls is sc.SRHT:
        valid = valid and d <= m
    if not valid:
        with pytest.raises(ValueError, match="d|m|nnz"):
            cls(d, m, seed=1, **kwargs)
        return
    S = cls(d, m, seed=1, **kwargs)
    assert S.shape == (d, m) and S.to_dense().shape == (d, m)
    x = np.ones(m, dtype=np.float32)
    _check_close((S @ x)[:, None], S.to_dense(), x[:, None], np.float32)
