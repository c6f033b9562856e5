"""Randomized linear algebra on the CPU against LAPACK, scikit-learn and torch (float64).

Cases (same run, same thread count for every implementation: ``--threads``, default 2, set
with threadpoolctl for BLAS and OpenMP alike, and ``torch.set_num_threads``):

* ``cqrrpt`` at (20000, 200), (100000, 200), (50000, 1000) on Gaussian matrices whose columns
  are scaled over 6 orders of magnitude ("graded": pivoting matters; CQRRPT's equilibrated
  direct Cholesky QR applies) and, at the two n = 200 shapes, on matrices of condition 1e10
  ("cond 1e10": the sketch-preconditioned path, gather + trsm + syrk), against
  ``scipy.linalg.qr(A, mode="economic", pivoting=True)`` and unpivoted ``mode="economic"``.
  Extra columns: ``||A[:, J] - Q R|| / ||A||`` and ``||Q^T Q - I||``.
* ``rsvd`` with k = 50, oversample 10, 2 power iterations on 4000 x 3000 and 20000 x 2000
  matrices with spectrum ``s_j = j^-1``, against ``sklearn.utils.extmath.randomized_svd``
  (``n_components=k, n_oversamples=10, n_iter=2``, its default normaliser for that
  ``n_iter``) and ``torch.svd_lowrank(q=k+10, niter=2)`` truncated to k. Extra columns: the
  spectral error ``||A - U S Vt||_2 / s_{k+1}`` (50 power iterations on the residual: a lower
  estimate, hence values slightly below the Eckart-Young floor of 1), mean and largest over
  ``ERROR_SEEDS`` seeds of each implementation (timings use seed 0). The row
  ``power_dtype=float32`` runs the sketch and the power steps except the last product in
  float32 (the last ``A Z``, ``Q^T A`` and the small SVD in float64; see ``rsvd``).
* ``lstsq`` on 100000 x 500 (``b = A x + 0.1 noise``, tol = 1e-10) against
  ``scipy.linalg.lstsq`` (gelsd) and ``numpy.linalg.lstsq``. Extra column: relative
  difference of x to SciPy's solution.

``python -m bench.linalg`` (``--quick``: small sizes, ``linalg_quick.md``; ``--threads N``
other than 2 appends ``_Nthread`` to the file names). Writes ``bench/results/linalg.md`` and
``linalg.png``.
"""
import argparse

import numpy as np
import scipy.linalg as sl
from threadpoolctl import threadpool_limits

from bench.common import Bench, timeit
from sketchcore import linalg as L

__all__ = ["run", "main"]


def _interleaved(impls, repeats):
    """Median seconds of each implementation, timed round-robin.

    The benchmark box is shared: a load burst then hits every implementation of a case alike
    instead of whichever happened to run during it. Each is warmed up once first.
    """
    times = {name: [] for name in impls}
    for fn in impls.values():
        fn()
    for _ in range(repeats):
        for name, fn in impls.items():
            times[name].append(timeit(fn, repeats=1, warmup=0))
    return {name: float(np.median(t)) for name, t in times.items()}


def _spectral_norm_of(apply, apply_t, n, iters=50, seed=0):
    """||M||_2 by power iteration on M^T M, given products with M and M^T."""
    v = np.random.default_rng(seed).standard_normal(n)
    s = 0.0
    for _ in range(iters):
        w = apply_t(apply(v))
        s = np.sqrt(np.linalg.norm(w))
        v = w / np.linalg.norm(w)
    return float(s)


def _cqrrpt_inputs(m, n, kinds, rng):
    """Test matrices: 'graded' = Gaussian with column scales 10^0..10^-6 in random order
    (pivoting matters, well conditioned up to column scaling); 'cond 1e10' = U diag(s) V^T
    with s log-spaced over 10 decades (ill conditioned in any column scaling)."""
    for kind in kinds:
        if kind == "graded":
            yield kind, rng.standard_normal((m, n)) * np.logspace(0, -6, n)[rng.permutation(n)]
        else:
            U, _ = np.linalg.qr(rng.standard_normal((m, n)))
            V, _ = np.linalg.qr(rng.standard_normal((n, n)))
            yield kind, np.ascontiguousarray((U * np.logspace(0, -10, n)) @ V.T)


def _bench_cqrrpt(bench, shapes, repeats):
    rng = np.random.default_rng(0)
    for (m, n), kinds in shapes:
        for kind, A in _cqrrpt_inputs(m, n, kinds, rng):
            case = f"cqrrpt {m}x{n} {kind}"
            impls = {
                "scipy qr pivoted": lambda: sl.qr(A, mode="economic", pivoting=True,
                                                  check_finite=False),
                "scipy qr": lambda: sl.qr(A, mode="economic", check_finite=False),
                "sketchcore cqrrpt": lambda: L.cqrrpt(A, seed=0),
            }
            reps = repeats if m * n <= 4e6 else (min(3, repeats) if m * n <= 2.5e7 else 1)
            times = _interleaved(impls, reps)
            for name, fn in impls.items():
                t = times[name]
                out = fn()
                Q, R = out[0], out[1]
                J = out[2] if len(out) == 3 else np.arange(n)
                rec = np.linalg.norm(A[:, J] - Q @ R) / np.linalg.norm(A)
                orth = np.linalg.norm(Q.T @ Q - np.eye(Q.shape[1]))
                base = (["scipy qr pivoted", "scipy qr"] if name.startswith("sketchcore")
                        else None)
                bench.add(case=case, impl=name, seconds=t, baseline=base, error=float(rec),
                          orthogonality=float(orth))


def _decaying_matrix(m, n, rng):
    r = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = 1.0 / np.arange(1, r + 1)
    return np.ascontiguousarray((U * s) @ V.T), s


#: The rsvd error columns are the mean and the largest over this many seeds: one seed's
#: error varies by a few percent between test matrices, more than between the methods.
ERROR_SEEDS = 10


def _bench_rsvd(bench, shapes, k, repeats):
    import torch
    from sklearn.utils.extmath import randomized_svd
    rng = np.random.default_rng(1)
    p, q = 10, 2
    for m, n in shapes:
        A, s = _decaying_matrix(m, n, rng)
        At = torch.from_numpy(A)
        case = f"rsvd {m}x{n} k={k}"

        def torch_lowrank(seed=0):
            torch.manual_seed(seed)
            U, S, V = torch.svd_lowrank(At, q=k + p, niter=q)
            return U[:, :k].numpy(), S[:k].numpy(), V[:, :k].T.numpy()

        runs = {
            "sklearn randomized_svd": lambda seed=0: randomized_svd(
                A, k, n_oversamples=p, n_iter=q, random_state=seed),
            "torch svd_lowrank": torch_lowrank,
            "sketchcore rsvd": lambda seed=0: L.rsvd(A, k, oversample=p, n_iter=q, seed=seed),
            "sketchcore rsvd power_dtype=float32": lambda seed=0: L.rsvd(
                A, k, oversample=p, n_iter=q, seed=seed, power_dtype="float32"),
        }
        times = _interleaved(runs, repeats)
        for name, fn in runs.items():
            errs = []
            for seed in range(ERROR_SEEDS):
                U, S, Vt = fn(seed)
                errs.append(_spectral_norm_of(lambda v: A @ v - U @ (S * (Vt @ v)),
                                              lambda w: A.T @ w - Vt.T @ (S * (U.T @ w)), n)
                            / s[k])
            base = (["sklearn randomized_svd", "torch svd_lowrank"]
                    if name.startswith("sketchcore") else None)
            bench.add(case=case, impl=name, seconds=times[name], baseline=base,
                      error=float(np.mean(errs)), **{"error max": float(np.max(errs))})


def _bench_lstsq(bench, shapes, repeats):
    rng = np.random.default_rng(2)
    for m, n in shapes:
        A = rng.standard_normal((m, n))
        b = A @ rng.standard_normal(n) + 0.1 * rng.standard_normal(m)
        x_ref = sl.lstsq(A, b, check_finite=False)[0]
        case = f"lstsq {m}x{n}"
        impls = {
            "scipy lstsq": lambda: sl.lstsq(A, b, check_finite=False)[0],
            "numpy lstsq": lambda: np.linalg.lstsq(A, b, rcond=None)[0],
            "sketchcore lstsq": lambda: L.lstsq(A, b, tol=1e-10, seed=0)[0],
        }
        times = _interleaved(impls, 3)
        for name, fn in impls.items():
            t = times[name]
            x = fn()
            base = ["scipy lstsq", "numpy lstsq"] if name.startswith("sketchcore") else None
            bench.add(case=case, impl=name, seconds=t, baseline=base,
                      error=float(np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref)))


def run(quick=False, threads=2, repeats=5):
    """Run every case; returns the ``Bench`` (written to ``linalg[_quick].md``)."""
    import torch
    torch.set_num_threads(threads)
    topic = "linalg_quick" if quick else "linalg"
    if threads != 2:
        topic += f"_{threads}thread"
    bench = Bench(topic, title=f"Randomized linear algebra (CPU, float64, {threads} threads)")
    if quick:
        qr_shapes = [((5000, 100), ["graded", "cond 1e10"])]
        rsvd_shapes, k, ls_shapes = [(1000, 800)], 20, [(20000, 100)]
    else:
        qr_shapes = [((20000, 200), ["graded", "cond 1e10"]),
                     ((100000, 200), ["graded", "cond 1e10"]),
                     ((50000, 1000), ["graded"])]
        rsvd_shapes, k = [(4000, 3000), (20000, 2000)], 50
        ls_shapes = [(100000, 500)]
    with threadpool_limits(limits=threads):
        _bench_cqrrpt(bench, qr_shapes, repeats)
        _bench_rsvd(bench, rsvd_shapes, k, repeats)
        _bench_lstsq(bench, ls_shapes, repeats)
    bench.note(f"{threads} threads for every implementation (BLAS, OpenMP, torch); "
               "implementations of a case timed round-robin (median), on a shared machine.")
    bench.note("error: cqrrpt/qr ||A[:,J] - QR||/||A||; rsvd ||A - U S Vt||_2 / s_(k+1) "
               f"(mean over {ERROR_SEEDS} seeds; error max: the largest); "
               "lstsq ||x - x_scipy|| / ||x_scipy||. orthogonality: ||Q^T Q - I||_F.")
    bench.note("cqrrpt inputs: graded = Gaussian columns scaled by 10^0..10^-6 in random order; "
               "cond 1e10 = U diag(logspace(0, -10)) V^T. rsvd inputs: s_j = 1/j. lstsq: "
               "b = A x + 0.1 noise, tol = 1e-10.")
    bench.write(columns=["error", "error max", "orthogonality"])
    return bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    run(quick=args.quick, threads=args.threads, repeats=args.repeats)


if __name__ == "__main__":
    main()
