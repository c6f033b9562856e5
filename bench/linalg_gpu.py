"""GPU benchmark of the randomized factorizations (``python -m bench.linalg_gpu``).

cqrrpt (CholeskyQR with randomization and pivoting) on a 100000 x 256 float32 CuPy matrix
against torch.linalg.qr (unpivoted Householder, cuSOLVER) and cupy.linalg.qr on the same GPU.
"""
import numpy as np

from bench.gpu_common import cuda_time, torch_time, GpuBench


def main():
    import cupy
    import sketchcore as sc
    bench = GpuBench("linalg_gpu", "Randomized QR on the GPU (float32)")
    dev = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    for m, n in ((100_000, 256), (1_000_000, 128)):
        case = f"{m}x{n} float32"
        rng = cupy.random.default_rng(0)
        A = rng.standard_normal((m, n), dtype=cupy.float32)
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
    bench.notes.append("Target: cqrrpt >= 3x faster than torch.linalg.qr on 100000 x 256.")
    print(bench.write(dev))


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
    timed("whole cqrrpt", lambda: _linalg.cqrrpt(A, seed=0))
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    _linalg.cqrrpt(A, seed=0)
    cupy.cuda.Device().synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    import sys
    if "--breakdown" in sys.argv:
        breakdown()
    else:
        main()
