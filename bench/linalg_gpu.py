"""GPU benchmark of the randomized factorizations (``python -m bench.linalg_gpu``).

cqrrpt (CholeskyQR with randomization and pivoting) on 100000 x 256 and 1000000 x 128 float32
Gaussian CuPy matrices (the sketch-free Gram route) and on a 100000 x 256 one of condition
1e5 (sketch, host geqp3, preconditioned Cholesky QR), against torch.linalg.qr (unpivoted
Householder, cuSOLVER) and cupy.linalg.qr on the same GPU; lstsq (sketch-and-precondition,
LSQR with its passes over A on the GPU) on 100000 x 500 float64 against torch.linalg.lstsq
(QR-based ``gels``, the CUDA driver); rsvd (k = 50, oversample 10, 2 power iterations) on a
20000 x 2000 float32 matrix with singular values 1/i against torch.svd_lowrank with the same
q and niter, both truncated to k, with the error ||A - U S V^T||_2 / sigma_{k+1}.
"""
import numpy as np

from bench.gpu_common import cuda_time, torch_time, GpuBench


def main():
    import cupy
    import sketchcore as sc
    bench = GpuBench("linalg_gpu", "Randomized QR (float32), SVD and least squares on the GPU")
    dev = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    for m, n, cond in ((100_000, 256, None), (1_000_000, 128, None), (100_000, 256, 1e5)):
        case = f"{m}x{n} float32" + (f" cond {cond:.0e}" if cond else "")
        rng = cupy.random.default_rng(0)
        A = rng.standard_normal((m, n), dtype=cupy.float32)
        if cond:
            U, _ = cupy.linalg.qr(A)
            V, _ = cupy.linalg.qr(rng.standard_normal((n, n), dtype=cupy.float32))
            s = cupy.logspace(0, -np.log10(cond), n, dtype=cupy.float32)
            A = cupy.ascontiguousarray((U * s) @ V.T)
        try:
            import torch
            At = torch.from_dlpack(A)
            bench.add(case, "torch.linalg.qr", torch_time(lambda: torch.linalg.qr(At), repeats=10))
        except ImportError:
            pass
        bench.add(case, "cupy.linalg.qr", cuda_time(lambda: cupy.linalg.qr(A), repeats=10))
        try:
            Q, R, J = sc.linalg.cqrrpt(A, seed=0)
            assert isinstance(Q, cupy.ndarray)
            err = float(cupy.linalg.norm(A[:, cupy.asarray(J)] - Q @ cupy.asarray(R))
                        / cupy.linalg.norm(A))
            orth = float(cupy.linalg.norm(Q.T @ Q - cupy.eye(Q.shape[1], dtype=Q.dtype)))
            t = cuda_time(lambda: sc.linalg.cqrrpt(A, seed=0), repeats=10)
            bench.add(case, "sketchcore cqrrpt", t, baseline="torch.linalg.qr")
            bench.add(case, "sketchcore cqrrpt ", t, baseline="cupy.linalg.qr")
            bench.notes.append(f"{case}: ||A[:,J] - QR|| / ||A|| = {err:.2e}, "
                               f"||Q^T Q - I|| = {orth:.2e}")
        except Exception as exc:
            bench.notes.append(f"{case}: sketchcore cqrrpt on CuPy did not run: "
                               f"{type(exc).__name__}: {exc}")
            print("cqrrpt failed:", repr(exc))
    for m, n, dtype in ((100_000, 500, "float64"), (100_000, 500, "float32"),
                        (1_000_000, 100, "float64")):
        _lstsq_case(bench, m, n, dtype)
    _rsvd_case(bench, 20_000, 2_000, 50)
    bench.notes.append("Target: cqrrpt >= 3x faster than torch.linalg.qr on 100000 x 256.")
    print(bench.write(dev))


def _rsvd_case(bench, m, n, k, p=10, q=2):
    """rsvd of a float32 matrix with singular values 1/i against torch.svd_lowrank."""
    import cupy
    import sketchcore as sc
    rng = cupy.random.default_rng(3)
    r = min(m, n)
    U, _ = cupy.linalg.qr(rng.standard_normal((m, r)))
    V, _ = cupy.linalg.qr(rng.standard_normal((n, r)))
    sv = 1.0 / cupy.arange(1, r + 1, dtype=cupy.float64)
    A64 = (U * sv) @ V.T
    A = cupy.ascontiguousarray(A64.astype(cupy.float32))
    case = f"rsvd {m}x{n} float32 k={k}"

    def error(Uk, Sk, Vtk, iters=40):
        """||A - U S V^T||_2 / sigma_{k+1} by power iteration on the float64 residual."""
        Uk, Sk, Vtk = (cupy.asarray(x, dtype=cupy.float64) for x in (Uk, Sk, Vtk))
        x = cupy.random.default_rng(0).standard_normal(n)
        norm = 0.0
        for _ in range(iters):
            y = A64 @ x - Uk @ (Sk * (Vtk @ x))
            x = A64.T @ y - Vtk.T @ (Sk * (Uk.T @ y))
            norm = float(cupy.linalg.norm(x)) ** 0.5
            x /= cupy.linalg.norm(x)
        return norm / float(sv[k])

    try:
        import torch
        At = torch.from_dlpack(A)
        bench.add(case, "torch svd_lowrank",
                  torch_time(lambda: torch.svd_lowrank(At, q=k + p, niter=q), repeats=10))
        torch.manual_seed(0)
        Ut, St, Vt = torch.svd_lowrank(At, q=k + p, niter=q)
        e_torch = error(cupy.from_dlpack(Ut[:, :k].contiguous()),
                        cupy.from_dlpack(St[:k].contiguous()),
                        cupy.from_dlpack(Vt[:, :k].T.contiguous()))
        bench.notes.append(f"{case}: torch svd_lowrank error {e_torch:.4f}")
        base = "torch svd_lowrank"
    except ImportError:
        base = None
    try:
        Us, Ss, Vts = sc.linalg.rsvd(A, k, oversample=p, n_iter=q, seed=0)
        assert isinstance(Us, cupy.ndarray)
        t = cuda_time(lambda: sc.linalg.rsvd(A, k, oversample=p, n_iter=q, seed=0),
                      repeats=10)
        bench.add(case, "sketchcore rsvd", t, baseline=base)
        bench.notes.append(f"{case}: sketchcore rsvd error {error(Us, Ss, Vts):.4f} "
                           "(||A - U S V^T||_2 / sigma_{k+1}; 1 is the best rank k can do)")
    except Exception as exc:
        bench.notes.append(f"{case}: sketchcore rsvd on CuPy did not run: "
                           f"{type(exc).__name__}: {exc}")
        print("rsvd failed:", repr(exc))


def _lstsq_case(bench, m, n, dtype):
    import cupy
    import sketchcore as sc
    case = f"lstsq {m}x{n} {dtype}"
    tol = 1e-10 if dtype == "float64" else 1e-5
    rng = cupy.random.default_rng(2)
    A = rng.standard_normal((m, n), dtype=dtype)
    b = A @ rng.standard_normal(n, dtype=dtype) + 0.1 * rng.standard_normal(m, dtype=dtype)
    try:
        import torch
        At, bt = torch.from_dlpack(A), torch.from_dlpack(b)
        bench.add(case, "torch.linalg.lstsq",
                  torch_time(lambda: torch.linalg.lstsq(At, bt[:, None]), repeats=5))
        x_ref = cupy.from_dlpack(torch.linalg.lstsq(At, bt[:, None]).solution[:, 0])
    except ImportError:
        x_ref = cupy.linalg.lstsq(A, b, rcond=None)[0]
    x, info = sc.linalg.lstsq(A, b, tol=tol, seed=0)
    assert isinstance(x, cupy.ndarray)
    t = cuda_time(lambda: sc.linalg.lstsq(A, b, tol=tol, seed=0), repeats=5)
    bench.add(case, "sketchcore lstsq", t, baseline="torch.linalg.lstsq")
    diff = float(cupy.linalg.norm(x - x_ref) / cupy.linalg.norm(x_ref))
    bench.notes.append(f"{case}: ||x - x_torch|| / ||x_torch|| = {diff:.2e}, "
                       f"{info.iterations} LSQR iterations")


def breakdown(m=100_000, n=256):
    """Wall time of each CQRRPT stage on the GPU (synchronised; printed)."""
    import time
    import cupy
    import numpy as np
    from sketchcore import _cpu
    from sketchcore._cuda import _linalg
    from sketchcore._linalg._common import make_sketch
    A = cupy.random.default_rng(0).standard_normal((m, n), dtype=cupy.float32)
    S = make_sketch("sparse_sign", int(np.ceil(1.25 * n)), m, 0, np.float32)

    def timed(name, fn, reps=5):
        fn()
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            out = fn()
        cupy.cuda.Device().synchronize()
        print(f"cqrrpt stage {name:28s} {(time.perf_counter() - t0) / reps * 1e3:8.3f} ms",
              flush=True)
        return out

    SA = timed("sketch S @ A", lambda: S @ A)
    B = timed("copy sketch to host", lambda: np.asfortranarray(cupy.asnumpy(SA)))
    J = timed("host geqp3", lambda: _cpu.geqp3_inplace(np.asfortranarray(B.copy())))
    Bq = np.asfortranarray(B.copy())
    J = _cpu.geqp3_inplace(Bq)
    Rs = np.triu(Bq[:n, :])
    Jd = cupy.asarray(J)
    Ag = timed("gather A[:, J]", lambda: A[:, Jd])
    X = timed("trsm (cupyx solve_triangular)", lambda: _linalg._solve_right_upper(Ag, Rs))
    Rinv = np.linalg.inv(Rs).astype(np.float32)
    Rd = cupy.asarray(Rinv)
    timed("gemm with inverse", lambda: Ag @ Rd)
    G = timed("gram X^T X", lambda: X.T @ X)
    timed("gram to host + potrf", lambda: _cpu.potrf_upper(np.asfortranarray(cupy.asnumpy(G))))
    import sketchcore as sc
    from sketchcore._cpu._threads import blas_single_thread
    Gd = timed("Gram A^T A", lambda: A.T @ A)
    Gh = timed("Gram to host (float64)", lambda: cupy.asnumpy(Gd).astype(np.float64))
    from scipy.linalg.lapack import spstrf
    with blas_single_thread():
        timed("host pstrf (float32)", lambda: spstrf(Gh.astype(np.float32)))
    timed("device pivoted Cholesky", lambda: _linalg._pivoted_cholesky(Gd, 1e-5))
    timed("Gram route (_gram_pivoted)", lambda: _linalg._gram_pivoted(A, 1e-5))
    timed("whole cqrrpt", lambda: sc.linalg.cqrrpt(A, seed=0))
    # lstsq on a float64 CuPy problem: sketch, device QR of the sketch, LSQR.
    from sketchcore._linalg import _lstsq
    m2, n2 = 100_000, 500
    rng = cupy.random.default_rng(2)
    A2 = rng.standard_normal((m2, n2))
    b2 = rng.standard_normal(m2)
    S2 = make_sketch("sparse_sign", 4 * n2, m2, 0, np.float64)
    SA2 = timed("lstsq sketch S @ A (float64)", lambda: S2 @ A2)
    timed("lstsq device Cholesky QR of the sketch", lambda: _lstsq._device_cholesky_r(SA2))
    P = cupy.asarray(np.ones((n2, 1)))
    timed("lstsq A P and A^T (A P)", lambda: A2.T @ (A2 @ P))
    timed("whole lstsq", lambda: sc.linalg.lstsq(A2, b2, tol=1e-10, seed=0))
    import cProfile
    import pstats
    # Host profiles: an ill-conditioned cqrrpt (sketch route) and the GPU lstsq.
    U, _ = cupy.linalg.qr(A)
    V, _ = cupy.linalg.qr(cupy.random.default_rng(1).standard_normal((n, n), dtype=A.dtype))
    Ab = cupy.ascontiguousarray((U * cupy.logspace(0, -5, n, dtype=A.dtype)) @ V.T)
    for name, fn in (("cqrrpt cond 1e5", lambda: sc.linalg.cqrrpt(Ab, seed=0)),
                     ("lstsq", lambda: sc.linalg.lstsq(A2, b2, tol=1e-10, seed=0))):
        fn()
        cupy.cuda.Device().synchronize()
        prof = cProfile.Profile()
        prof.enable()
        fn()
        cupy.cuda.Device().synchronize()
        prof.disable()
        print(f"host profile {name}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    import sys
    if "--breakdown" in sys.argv:
        breakdown()
    else:
        main()
