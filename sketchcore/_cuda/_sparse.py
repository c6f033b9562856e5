"""Sparse-sign / CountSketch operators on the GPU (sparse.cu): apply without storing S,
dense form for checks. Entry definition: sketchcore contracts (SparseSignSketch)."""
import math

import numpy as np

from sketchcore._cuda._loader import launch, grid_size, device_properties
from sketchcore._cuda._common import ctype_of, require_cupy_2d, i32, i64, u64, f64

__all__ = ["sparse_sign_left", "sparse_sign_right", "sparse_sign_dense", "sparse_sign_indices"]

_CHUNK = 128              # SC_SPARSE_CHUNK in sparse.cu
_SMEM_BUDGET = 100 * 1024  # two blocks per multiprocessor on Hopper (228 KiB)


#: Kernel for the left apply: "owned" (a warp per block of S's rows, plain shared-memory
#: updates; row-major operands, ``nnz >= OWNED_MIN_NNZ``, Y's block rows fitting in shared
#: memory), "red" (warp per row, vector reductions into Y in L2; float32, n % 4 == 0) or
#: "smem" (shared-memory tile of Y per block, emulated shared atomics); see sparse.cu.
#: "auto" takes the first that applies in that order. Set by measurement
#: (bench/operators_gpu.py).
LEFT_METHOD = "auto"
#: CountSketch (one nonzero) would give the owned kernel one warp per block: "red" then.
OWNED_MIN_NNZ = 4


def _owned_tile(d, nnz, n, size):
    """Columns per block of the owned kernel (32, 16 or 8) and its shared memory, or None."""
    if nnz > 16:
        return None
    _, optin = device_properties()
    bmax = -(-d // nnz)
    for tn in (32, 16, 8):
        if tn > 8 and tn >= 2 * n:
            continue
        smem = nnz * bmax * tn * size
        if smem <= optin:
            return tn, bmax, smem
    return None


def _apply_owned(A, m, n, lda, d, nnz, seed, stream, Y, ldy, tile):
    tn, bmax, smem = tile
    sms, optin = device_properties()
    gx = -(-n // tn)
    per_sm = max(1, min(optin, 227 * 1024) // smem)
    gy = max(1, min(-(-m // 32), -(-2 * sms * per_sm // gx)))
    rows = -(-m // gy)
    rows = -(-rows // 32) * 32
    gy = -(-m // rows)
    launch(f"sc_sparse_apply_owned<{ctype_of(A)}>", (gx, gy), (32 * nnz,),
           (A, i64(m), i64(n), i64(lda), i32(d), i32(nnz), u64(seed), u64(stream),
            f64(1.0 / math.sqrt(nnz)), Y, i64(ldy), i32(tn), i32(bmax), i64(rows)),
           shared_mem=smem)
    return Y


def _apply(A, m, n, saj, sac, d, nnz, seed, stream, Y, syr, syc, method=None):
    """Y (zeroed) += S @ A with A's element (j, c) at A[j*saj + c*sac], Y's (row, c) likewise."""
    ct = ctype_of(A)
    method = LEFT_METHOD if method is None else method
    if method in ("auto", "owned") and sac == 1 and syc == 1 and (
            method == "owned" or nnz >= OWNED_MIN_NNZ):
        tile = _owned_tile(d, nnz, n, np.dtype(A.dtype).itemsize)
        if tile is not None:
            return _apply_owned(A, m, n, saj, d, nnz, seed, stream, Y, syr, tile)
    if method == "auto":
        method = "red"
    if (method == "red" and ct == "float" and sac == 1 and syc == 1 and n % 4 == 0
            and saj % 4 == 0 and syr % 4 == 0 and A.data.ptr % 16 == 0
            and Y.data.ptr % 16 == 0):
        sms, _ = device_properties()
        blocks = max(1, min(-(-m * 32 // 256), sms * 8))
        launch("sc_sparse_apply_red", (blocks,), (256,),
               (A, i64(m), i64(n), i64(saj), i32(d), i32(nnz), u64(seed), u64(stream),
                f64(1.0 / math.sqrt(nnz)), Y, i64(syr)))
        return Y
    size = np.dtype(A.dtype).itemsize
    scale = 1.0 / math.sqrt(nnz)
    sms, optin = device_properties()
    budget = min(_SMEM_BUDGET, optin)
    tn = 32
    while tn > 1 and tn >= 2 * n:           # no wider than the columns there are
        tn //= 2
    while tn > 4 and d * tn * size + _CHUNK * nnz * 4 > budget:
        tn //= 2
    smem = d * tn * size + _CHUNK * nnz * 4
    if smem <= budget:
        gx = -(-n // tn)
        per_sm = max(1, (min(optin, 227 * 1024)) // max(smem, 1))
        gy = max(1, min(-(-m // _CHUNK), (2 * sms * per_sm + gx - 1) // gx))
        rows = -(-m // gy)
        rows = -(-rows // _CHUNK) * _CHUNK
        gy = -(-m // rows)
        launch(f"sc_sparse_apply_smem<{ct}>", (gx, gy), (256,),
               (A, i64(m), i64(n), i64(saj), i64(sac), i32(d), i32(nnz), u64(seed), u64(stream),
                f64(scale), Y, i64(syr), i64(syc), i32(tn), i64(rows)), shared_mem=smem)
    else:
        launch(f"sc_sparse_apply_atomic<{ct}>", (min(-(-m * 32 // 256), sms * 16),), (256,),
               (A, i64(m), i64(n), i64(saj), i64(sac), i32(d), i32(nnz), u64(seed), u64(stream),
                f64(scale), Y, i64(syr), i64(syc)))
    return Y


def _check(d, nnz):
    d, nnz = int(d), int(nnz)
    if not 1 <= nnz <= d or d >= 2 ** 31:
        raise ValueError(f"need 1 <= nnz <= d < 2**31, got nnz={nnz}, d={d}")
    return d, nnz


def sparse_sign_left(A, d, nnz, seed, stream, method=None):
    """``S @ A`` for the sparse-sign operator S (d, m); A cupy.ndarray (m, n) -> (d, n).

    ``method`` picks the kernel ("auto", "owned", "red", "smem"; default ``LEFT_METHOD``),
    for benchmarks; one that does not apply to the input falls back to the next."""
    import cupy
    A = require_cupy_2d(A, "A")
    d, nnz = _check(d, nnz)
    m, n = A.shape
    Y = cupy.zeros((d, n), dtype=A.dtype)
    if m and n:
        _apply(A, m, n, n, 1, d, nnz, seed, stream, Y, n, 1, method)
    return Y


def sparse_sign_right(A, d, nnz, seed, stream):
    """``A @ S.T`` for the sparse-sign operator S (d, m); A cupy.ndarray (n, m) -> (n, d)."""
    import cupy
    A = require_cupy_2d(A, "A")
    d, nnz = _check(d, nnz)
    n, m = A.shape
    if (LEFT_METHOD in ("auto", "red") and A.dtype == cupy.float32 and n % 4 == 0 and m and n):
        # A transposed copy (one pass over A) lets the row-per-warp reduction kernel run
        # on contiguous rows instead of the strided shared-memory kernel (timed against a
        # device copy in bench/operators_gpu.py, "CountSketch right").
        Yt = sparse_sign_left(cupy.ascontiguousarray(A.T), d, nnz, seed, stream)
        return cupy.ascontiguousarray(Yt.T)
    Y = cupy.zeros((n, d), dtype=A.dtype)
    if m and n:   # Y.T = S @ A.T through strides: A.T's (j, c) = A[c*m + j], Y.T's (r, c) = Y[c*d + r]
        _apply(A, m, n, 1, m, d, nnz, seed, stream, Y, 1, d)
    return Y


def sparse_sign_dense(d, m, nnz, seed, stream, dtype):
    """The dense (d, m) matrix of a sparse-sign operator (tests, small sizes)."""
    import cupy
    d, nnz = _check(d, nnz)
    S = cupy.zeros((d, int(m)), dtype=np.dtype(dtype))
    ct = ctype_of(S)
    if m:
        launch(f"sc_sparse_dense<{ct}>", (grid_size(int(m) * nnz),), (256,),
               (i32(d), i64(m), i32(nnz), u64(seed), u64(stream), f64(1.0 / math.sqrt(nnz)), S))
    return S


def sparse_sign_indices(d, nnz, seed, stream, j0, j1):
    """Nonzero rows and signs of columns j0 .. j1-1: (rows int32, signs float64 of +-1),
    both cupy.ndarray of shape (j1 - j0, nnz); same values as the CPU's."""
    import cupy
    d, nnz = _check(d, nnz)
    nj = max(int(j1) - int(j0), 0)
    rows = cupy.empty((nj, nnz), dtype=cupy.int32)
    signs = cupy.empty((nj, nnz), dtype=cupy.float64)
    if nj:
        launch("sc_sparse_indices", (grid_size(nj * nnz),), (256,),
               (i64(j0), i64(nj), i32(d), i32(nnz), u64(seed), u64(stream), rows, signs))
    return rows, signs
