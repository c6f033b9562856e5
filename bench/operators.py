"""Sketch operators on the CPU: ``S @ A`` for every kind against NumPy, SciPy and a copy of A.

For A of shape (m, n) float32 (default 100000 x 256) and d = 512, each kind's time includes
building the operator (``Kind(d, m, seed=...)`` then ``S @ A``). Baselines, same run:

* ``numpy dense``: draw the dense operator with ``numpy.random.Generator`` and matmul
  (Gaussian: ``standard_normal``; sign: ``integers``; sparse kinds: the same sparsity pattern
  drawn with the Generator into a dense array);
* ``numpy gaussian``: for SRHT, the Gaussian operator of the same d drawn and multiplied;
* ``scipy csr``: for the sparse kinds, a prebuilt ``scipy.sparse`` CSR matrix of the very
  same operator (construction not timed) times A;
* ``copy of A``: ``A.copy()``, the memory floor of anything that reads A once.

Run ``python -m bench.operators`` (``--quick`` for small sizes). Writes
``bench/results/operators.md`` and ``operators.png`` (``operators_quick`` with --quick).
"""
import argparse

import numpy as np
import scipy.sparse

import sketchcore as sc
from bench.common import Bench, timeit

__all__ = ["run", "main"]


def _numpy_gaussian(d, m, A, seed):
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((d, m), dtype=np.float32)
    Y = S @ A
    Y *= np.float32(1 / np.sqrt(d))
    return Y


def _numpy_sign(d, m, A, seed):
    rng = np.random.default_rng(seed)
    S = rng.integers(0, 2, size=(d, m), dtype=np.int8).astype(np.float32)
    s = np.float32(1 / np.sqrt(d))
    S *= 2 * s
    S -= s
    return S @ A


def _numpy_sparse(d, m, nnz, A, seed):
    rng = np.random.default_rng(seed)
    S = np.zeros((d, m), dtype=np.float32)
    cols = np.arange(m)
    s = np.float32(1 / np.sqrt(nnz))
    for t in range(nnz):
        lo, hi = t * d // nnz, (t + 1) * d // nnz
        rows = lo + rng.integers(0, hi - lo, size=m)
        S[rows, cols] = np.where(rng.integers(0, 2, size=m) == 1, s, -s)
    return S @ A


def _csr_of(op):
    rows, signs = sc._cpu.sparse_sign_indices(op.d, op.nnz, op.seed, op.stream, 0, op.m)
    cols = np.repeat(np.arange(op.m), op.nnz)
    vals = (signs.ravel() / np.sqrt(op.nnz)).astype(np.float32)
    return scipy.sparse.csr_matrix((vals, (rows.ravel(), cols)), shape=(op.d, op.m))


def _rel_err(op, A):
    """Relative error of ``S @ A`` against ``S.to_dense() @ A`` on a few columns."""
    part = np.ascontiguousarray(A[:, :4])
    ref = op.to_dense().astype(np.float64) @ part.astype(np.float64)
    return float(np.linalg.norm((op @ part) - ref) / np.linalg.norm(ref))


def run(m=100_000, n=256, d=512, nnz=8, repeats=5, warmup=1, topic="operators",
        out_dir=None, plot=True):
    """Measure every kind; returns the ``Bench`` (already written)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((m, n), dtype=np.float32)
    bench = Bench(topic, title=f"Sketch operators: S @ A, A {m}x{n} float32, d={d} (CPU)",
                  out_dir=out_dir)
    t_copy = timeit(lambda: A.copy(), repeats, warmup)
    t_np_gauss = timeit(lambda: _numpy_gaussian(d, m, A, 1), repeats, warmup)

    kinds = [
        ("gaussian", lambda s: sc.GaussianSketch(d, m, seed=s),
         lambda: _numpy_gaussian(d, m, A, 1)),
        ("sign", lambda s: sc.SignSketch(d, m, seed=s), lambda: _numpy_sign(d, m, A, 1)),
        (f"sparse_sign nnz={nnz}", lambda s: sc.SparseSignSketch(d, m, nnz=nnz, seed=s),
         lambda: _numpy_sparse(d, m, nnz, A, 1)),
        ("countsketch", lambda s: sc.CountSketch(d, m, seed=s),
         lambda: _numpy_sparse(d, m, 1, A, 1)),
        ("srht", lambda s: sc.SRHT(d, m, seed=s), None),
    ]
    for case, make, numpy_fn in kinds:
        bench.add(case=case, impl="copy of A", seconds=t_copy)
        bases = ["copy of A"]
        if numpy_fn is None:
            bench.add(case=case, impl="numpy gaussian", seconds=t_np_gauss)
            bases.append("numpy gaussian")
        elif case == "gaussian":
            bench.add(case=case, impl="numpy dense", seconds=t_np_gauss)
            bases.append("numpy dense")
        else:
            bench.add(case=case, impl="numpy dense", seconds=timeit(numpy_fn, repeats, warmup))
            bases.append("numpy dense")
        op = make(7)
        if isinstance(op, sc.SparseSignSketch):
            csr = _csr_of(op)
            bench.add(case=case, impl="scipy csr (prebuilt)",
                      seconds=timeit(lambda: csr @ A, repeats, warmup))
            bases.append("scipy csr (prebuilt)")
        counter = iter(range(10 ** 9))
        t = timeit(lambda: make(next(counter)) @ A, repeats, warmup)
        bench.add(case=case, impl="sketchcore", seconds=t, baseline=bases,
                  rel_err=_rel_err(op, A))
    bench.note("sketchcore times include constructing the operator with a fresh seed each call.")
    bench.note("rel_err: ||S @ A - to_dense(S) @ A|| / ||to_dense(S) @ A|| on 4 columns "
               "(float64 reference).")
    bench.write(columns=["rel_err"], plot=plot)
    return bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out-dir", default=None, help="results directory")
    args = parser.parse_args(argv)
    if args.quick:
        return run(m=20_000, n=64, d=128, nnz=8, repeats=args.repeats or 3, warmup=1,
                   topic="operators_quick", out_dir=args.out_dir)
    return run(repeats=args.repeats or 5, out_dir=args.out_dir)


if __name__ == "__main__":
    main()
