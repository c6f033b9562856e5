"""LSQR iterations on the GPU (lsqr.cu): the loop of ``sketchcore._linalg._lstsq`` for CuPy
input, with its vector updates fused and its scalars kept on the device."""
import numpy as np

from sketchcore._cuda._loader import launch, grid_size
from sketchcore._cuda._common import ctype_of, i32, i64, f64

__all__ = ["lsqr_iterations", "FIELDS"]

#: Rows of the per-column state array (SC_LSQR_* in lsqr.cu).
FIELDS = {"alpha": 0, "beta_prev": 1, "rhobar": 2, "phibar": 3, "rnorm": 4, "arnorm": 5,
          "err": 6, "conv": 7, "ucoef": 8, "bnorm": 9}
_NFIELDS = 18
_BLOCK = 256


def lsqr_iterations(products, solve, dtype, U, V, W, z, scalars, tol, max_iter, bound_factor,
                    eps):
    """Run LSQR from its starting vectors until every column converges or ``max_iter``.

    Parameters
    ----------
    products : callable
        ``products(v)`` for ``v`` of shape (r, k) in A's dtype returns ``(M v, M^T M v)``
        of shapes (m, k) and (r, k), C-contiguous, in A's dtype.
    solve : callable
        ``solve(z)`` returns ``R^-1 z`` (r, k) as float64 (for the stopping rule's ``||x||``).
    dtype : numpy.dtype
        A's dtype, float32 or float64: that of the products' operands.
    U : cupy.ndarray of shape (m, k)
        ``u_1`` (normalised).
    V, W, z : cupy.ndarray of shape (r, k)
        ``v_1``, ``w_1 = v_1`` and the start ``z_0``.
    scalars : dict of cupy.ndarray of shape (k,)
        ``alpha``, ``rhobar``, ``phibar``, ``rnorm``, ``arnorm``, ``err``, ``conv``
        (bool) and ``bnorm`` after the start.
    tol, eps : float
        Target bound on ``||x - x*|| / ||x||``; the dtype's machine epsilon.
    max_iter : int
    bound_factor : float
        ``||R^-1|| / s_min(M)^2``: turns ``||M^T r||`` into a bound on ``||x - x*||``.

    Returns
    -------
    z : cupy.ndarray of shape (r, k), float64
    stats : tuple
        ``(iterations, conv, err, rnorm, arnorm)``, the last four host arrays of shape (k,).
    """
    import cupy
    m, k = U.shape
    r = V.shape[0]
    st = cupy.zeros((_NFIELDS, k), dtype=np.float64)
    for name, value in scalars.items():
        st[FIELDS[name]] = value
    st[FIELDS["ucoef"]] = 1.0
    U, V, W, z = (cupy.array(a, dtype=np.float64, order="C", copy=True) for a in (U, V, W, z))
    Vp, P = cupy.zeros_like(V), cupy.empty_like(V)
    Vt = V.astype(dtype)
    ct = ctype_of(Vt)
    count = cupy.zeros(1, dtype=np.int32)
    # Each iteration's count of running columns goes to pinned memory and is read one
    # iteration later, so that the host queues iteration i + 1 while the GPU runs i: an
    # iteration after the last one changes nothing (converged columns are frozen).
    pinned = cupy.cuda.alloc_pinned_memory(8)
    counts = np.frombuffer(pinned, dtype=np.int32, count=2)
    events = (cupy.cuda.Event(disable_timing=True), cupy.cuda.Event(disable_timing=True))
    stream = cupy.cuda.get_current_stream()
    gu = max(1, grid_size(m * k, _BLOCK) // k)
    gr = max(1, min(-(-r // _BLOCK), grid_size(r * k, _BLOCK) // k))
    gk = (-(-k // _BLOCK),)
    it = 0
    running = int((~scalars["conv"]).sum())
    while it < max_iter and running:
        it += 1
        Q, MtMv = products(Vt)
        launch(f"sc_lsqr_u<{ct}>", (gu, k), (_BLOCK,), (Q, U, i64(m), i32(k), st))
        launch(f"sc_lsqr_p<{ct}>", (gr, k), (_BLOCK,), (MtMv, V, Vp, P, i32(r), i32(k), st))
        launch("sc_lsqr_scalars", gk, (_BLOCK,), (i32(k), st, count))
        launch(f"sc_lsqr_vectors<{ct}>", (grid_size(r * k, _BLOCK),), (_BLOCK,),
               (V, Vp, W, z, P, Vt, i32(r), i32(k), st))
        X = cupy.ascontiguousarray(solve(z), dtype=np.float64)
        launch("sc_lsqr_norms", (gr, k), (_BLOCK,), (z, X, i32(r), i32(k), st))
        launch("sc_lsqr_check", gk, (_BLOCK,),
               (i32(k), st, f64(bound_factor), f64(tol), f64(eps), count))
        slot = it & 1
        cupy.cuda.runtime.memcpyAsync(counts.ctypes.data + 4 * slot, count.data.ptr, 4,
                                      cupy.cuda.runtime.memcpyDeviceToHost, stream.ptr)
        events[slot].record(stream)
        if it > 1:
            events[slot ^ 1].synchronize()
            if counts[slot ^ 1] == 0:                 # done one iteration ago
                it -= 1
                break
    host = st.get()
    return z, (it, host[FIELDS["conv"]] != 0, host[FIELDS["err"]], host[FIELDS["rnorm"]],
               host[FIELDS["arnorm"]])
