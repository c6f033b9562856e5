"""The split products of the randomized factorizations (``sketchcore._linalg._split``) against
plain NumPy, for every slab count and layout."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from threadpoolctl import threadpool_limits

from sketchcore._linalg import _split
from sketchcore._linalg._split import thin_product, gram, cast


@pytest.fixture(autouse=True)
def _split_small_problems(monkeypatch):
    # The split only starts above MIN_SPLIT_WORK multiply-adds; test it on small inputs.
    monkeypatch.setattr(_split, "MIN_SPLIT_WORK", 0)


def _tol(dtype, q):
    return 20 * np.finfo(dtype).eps * max(q, 1)


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 1200), q=st.integers(1, 30), r=st.integers(1, 9),
       parts=st.integers(1, 4), fortran=st.booleans(), rowmajor=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_thin_product_matches_numpy(p, q, r, parts, fortran, rowmajor, dtype, seed):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((p, q)).astype(dtype)
    if fortran:
        M = np.asfortranarray(M)
    X = rng.standard_normal((q, r)).astype(dtype)
    out = thin_product(M, X, parts=parts, rowmajor=rowmajor)
    assert out.shape == (p, r) and out.dtype == dtype
    assert out.flags.c_contiguous if rowmajor else out.flags.f_contiguous
    ref = M.astype(np.float64) @ X.astype(np.float64)
    np.testing.assert_allclose(out, ref, rtol=0, atol=_tol(dtype, q) * np.abs(ref).max())


def test_thin_product_result_does_not_depend_on_the_slab_count():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((3000, 200))
    X = rng.standard_normal((200, 7))
    one = thin_product(M, X, parts=1)
    for parts in (2, 3):
        np.testing.assert_array_equal(thin_product(M, X, parts=parts), one)


def test_thin_product_default_parts_follow_blas_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(_split, "_run_parts", lambda work, parts: calls.append(parts) or
                        [work(i) for i in range(parts)])
    M = np.ones((2048, 8))
    with threadpool_limits(limits=2, user_api="blas"):
        out = thin_product(M, np.ones((8, 2)))
    with threadpool_limits(limits=1, user_api="blas"):
        thin_product(M, np.ones((8, 2)))
    assert calls == [2]
    np.testing.assert_array_equal(out, np.full((2048, 2), 8.0))


def test_thin_product_strided_input_is_not_split():
    M = np.arange(60.0).reshape(10, 6)[:, ::2]
    X = np.ones((3, 2))
    np.testing.assert_array_equal(thin_product(M, X, parts=3), M @ X)


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_matches_numpy(parts, dtype):
    rng = np.random.default_rng(1)
    Q = np.asfortranarray(rng.standard_normal((1500, 11)).astype(dtype))
    G = gram(Q, parts=parts)
    ref = Q.astype(np.float64).T @ Q.astype(np.float64)
    np.testing.assert_allclose(G, ref, rtol=0, atol=_tol(dtype, 1500) * np.abs(ref).max())


@pytest.mark.parametrize("fortran", [False, True])
def test_cast_matches_astype(fortran):
    A = np.random.default_rng(2).standard_normal((1000, 33))
    if fortran:
        A = np.asfortranarray(A)
    with threadpool_limits(limits=2, user_api="blas"):
        out = cast(A, np.float32)
    assert out.flags.c_contiguous and out.dtype == np.float32
    np.testing.assert_array_equal(out, A.astype(np.float32))


def test_split_session_fixes_the_split_and_keeps_blas_on_one_thread():
    from sketchcore._cpu._threads import _get_controller
    from sketchcore._linalg._split import split_session, blas_threads

    def current():
        return max(lc.num_threads for lc in _get_controller().select(user_api="blas")
                   .lib_controllers)

    with threadpool_limits(limits=2, user_api="blas"):
        with split_session() as parts:
            assert parts == 2 and blas_threads() == 2 and current() == 1
        assert current() == 2 and blas_threads() == 2
