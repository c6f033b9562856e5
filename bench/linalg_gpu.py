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


if __name__ == "__main__":
    main()
