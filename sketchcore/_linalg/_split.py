"""Products with a big operand, split into independent slabs on our own threads.

OpenBLAS threads one ``gemm`` by cutting the output into panels and synchronising its workers
within the call; for the thin products of the randomized factorizations (a 20000 x 2000 matrix
times 60 columns) that ran 15% slower on 2 cores than two single-threaded ``gemm`` calls on
disjoint halves of the big operand (measured 41 against 48 ms in float64, same for float32).
Each slab's output is computed by the same kernel as the whole product's rows, so the result
does not depend on the number of slabs (the split never cuts the summation dimension).

Only NumPy arrays are split; anything else (CuPy) goes to its own ``@``.
"""
import contextlib
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sketchcore._backend import xp_of
from sketchcore._linalg._common import blas_single_thread

__all__ = ["thin_product", "gram", "inner", "cast", "blas_threads", "split_session"]

#: Below this many multiply-adds a split is not worth a thread hand-off (about a millisecond).
MIN_SPLIT_WORK = 1 << 24

_executor = None
_executor_lock = threading.Lock()


_session_parts = contextvars.ContextVar("sketchcore_split_parts", default=None)


@contextlib.contextmanager
def split_session():
    """Run a whole factorization's products as split single-threaded ``gemm`` calls.

    Inside, the BLAS stays on one thread throughout and every product splits over the thread
    count the BLAS had on entry. Switching OpenBLAS back to several threads between two
    products (what a ``blas_single_thread`` block per product does on exit) wakes its
    workers, which then busy-wait for about 0.1 s on the cores the next split product
    needs: measured 25 instead of 13 ms per product (4000 x 3000 times 60 columns, 2 cores)
    for the first four products of an rsvd."""
    parts = blas_threads()
    token = _session_parts.set(parts)
    try:
        with blas_single_thread():
            yield parts
    finally:
        _session_parts.reset(token)


def blas_threads():
    """Thread count for a split: the one ``split_session`` fixed, else the loaded BLAS's
    right now (threadpoolctl's view)."""
    fixed = _session_parts.get()
    if fixed is not None:
        return fixed
    from sketchcore._cpu._threads import _get_controller
    return max((lc.num_threads for lc in _get_controller().select(user_api="blas")
                .lib_controllers), default=1)


def _run_parts(work, parts):
    """``work(i)`` for ``i < parts``: part 0 on the calling thread, the rest on the pool."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor._max_workers < parts - 1:
            _executor = ThreadPoolExecutor(max_workers=parts - 1,
                                           thread_name_prefix="sketchcore-split")
        futures = [_executor.submit(work, i) for i in range(1, parts)]
    work(0)
    for f in futures:
        f.result()


def _bounds(n, parts, i):
    return (n * i) // parts, (n * (i + 1)) // parts


def _parts(rows, work, parts):
    parts = blas_threads() if parts is None else int(parts)
    parts = min(parts, max(1, rows // 256))
    return parts if work >= MIN_SPLIT_WORK else 1


def thin_product(M, X, *, parts=None, rowmajor=False):
    """``M @ X`` for a big ``(p, q)`` M and a thin ``(q, r)`` X.

    The rows of M are split into ``parts`` slabs (default: the BLAS thread count), each a
    single-threaded ``gemm`` on its own thread. (Smaller slabs handed out dynamically, four
    per thread, were measured 15% slower: the short-and-wide GEMMs lose efficiency.) By
    default each slab is computed as ``(X^T M^T)^T``: OpenBLAS runs that short-and-wide
    product 1.3-1.6x faster than the tall-and-thin one in float64.

    Parameters
    ----------
    M : ndarray of shape (p, q)
        C- or F-contiguous (an F-contiguous M is the transpose of a C-contiguous matrix, whose
        column slabs are then the strided operands: no copy).
    X : ndarray of shape (q, r)
    parts : int, optional
        Slabs (threads). Pass it when calling from inside ``blas_single_thread`` (outside a
        ``split_session``), where the default would read 1.
    rowmajor : bool, default False
        Compute ``M[a:b] @ X`` per slab into a C-ordered result instead (for small ``q``,
        where the orientation does not matter and the caller wants C order).

    Returns
    -------
    ndarray of shape (p, r)
        Fortran-ordered (a transposed view of a C-ordered ``(r, p)`` array), or C-ordered
        with ``rowmajor``.
    """
    if xp_of(M) is not np:
        return M @ X
    p, q = M.shape
    r = X.shape[1]
    parts = _parts(p, p * q * r, parts)
    if not (M.flags.c_contiguous or M.flags.f_contiguous):
        parts = 1
    dtype = np.result_type(M.dtype, X.dtype)
    if rowmajor:
        out = np.empty((p, r), dtype=dtype)

        def work(i):
            a, b = _bounds(p, parts, i)
            np.matmul(M[a:b], X, out=out[a:b])
    else:
        out_t = np.empty((r, p), dtype=dtype)
        Xt = np.ascontiguousarray(X.T, dtype=dtype)
        out = out_t.T

        def work(i):
            a, b = _bounds(p, parts, i)
            np.matmul(Xt, M[a:b].T, out=out_t[:, a:b])

    if parts < 2:
        work(0)
        return out
    with blas_single_thread():
        _run_parts(work, parts)
    return out


def gram(Q, *, parts=None):
    """``Q^T Q`` for a tall ``(m, r)`` Q (see ``inner``).

    Returns
    -------
    ndarray of shape (r, r)
    """
    return inner(Q, Q, parts=parts)


def inner(X, Y, *, parts=None):
    """``X^T Y`` for tall ``(m, r)`` X and ``(m, s)`` Y: partial products of row slabs,
    summed in slab order (the rounding depends on ``parts``, default the BLAS thread count).

    Returns
    -------
    ndarray of shape (r, s)
    """
    if xp_of(X) is not np:
        return X.T @ Y
    m, r = X.shape
    parts = _parts(m, m * r * Y.shape[1], parts)
    partial = [None] * parts

    def work(i):
        a, b = _bounds(m, parts, i)
        partial[i] = X[a:b].T @ Y[a:b]

    if parts < 2:
        work(0)
    else:
        with blas_single_thread():
            _run_parts(work, parts)
    G = partial[0]
    for P in partial[1:]:
        G += P
    return G


def cast(A, dtype):
    """``A.astype(dtype)`` (C order) with the rows split over the BLAS thread count.

    NumPy releases the GIL in its casting loops, so the slabs convert in parallel: a
    20000 x 2000 float64 -> float32 cast is memory-bound and runs at twice one thread's pace
    on two cores."""
    dtype = np.dtype(dtype)
    if xp_of(A) is not np:
        return A.astype(dtype)
    m = A.shape[0]
    parts = _parts(m, 16 * A.size, None)
    if parts < 2:
        return np.ascontiguousarray(A, dtype=dtype)
    out = np.empty(A.shape, dtype=dtype)

    def work(i):
        a, b = _bounds(m, parts, i)
        out[a:b] = A[a:b]

    _run_parts(work, parts)
    return out
