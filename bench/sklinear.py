"""SKLinear against nn.Linear and against the same factor math written in plain torch.

    python -m bench.sklinear            # full grid, writes bench/results/sklinear.md + .png
    python -m bench.sklinear --quick    # in_features 1024 only, fewer repeats (smoke run)

Every configuration is square (in = out = n), float32 on the CPU, and is timed three ways in
the same run:

* ``nn.Linear``: the dense layer SKLinear replaces;
* ``torch loop``: what a user writes for the same factors without sketchcore, a Python loop
  over the terms, ``sum_i (x @ S1s[i]) @ U1s[i] + (x @ U2s[i]) @ S2s[i]`` (autograd saves
  the intermediates it needs);
* ``SKLinear``: ``sketchcore_torch.nn.SKLinear`` (stacked GEMMs in the Cython kernels).

"fwd" runs under ``torch.no_grad()``; "fwd+bwd" is ``layer(x).backward(g)`` with ``x``
requiring grad (so every gradient, x's included, is computed), after zeroing grads.
A last block measures the fixed per-call cost on a tiny layer, where it dominates.
"""
import argparse

import numpy as np
import torch
from torch import nn

from bench.common import Bench, timeit
from sketchcore_torch.nn import SKLinear

SIZES = (1024, 4096, 8192)
BATCHES = (64, 512)
TERMS = ((1, 16), (2, 32), (4, 64))
EXTRA = ((1024, 256, 2, 32),)       # the "1.5x nn.Linear" case


def _loop(x, S1s, S2s, U1s, U2s, bias):
    L = S1s.shape[0]
    y = 0
    for i in range(L):
        y = y + (x @ S1s[i]) @ U1s[i] + (x @ U2s[i]) @ S2s[i]
    return y / (2 * L) + bias


def _fwd_bwd(fn, x, g, params):
    def run():
        for p in params:
            p.grad = None
        x.grad = None
        fn().backward(g)
    return run


def _no_grad(fn):
    def run():
        with torch.no_grad():
            fn()
    return run


def bench_config(bench, n, batch, L, k, repeats):
    torch.manual_seed(0)
    sk = SKLinear(n, n, L, k, seed=0)
    lin = nn.Linear(n, n)
    x = torch.randn(batch, n, requires_grad=True)
    g = torch.randn(batch, n)
    factors = (sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias)
    impls = {
        "nn.Linear": (lambda: lin(x), list(lin.parameters())),
        "torch loop": (lambda: _loop(x, *factors), [sk.S1s, sk.S2s, sk.bias]),
        "SKLinear": (lambda: sk(x), list(sk.parameters())),
    }
    # The dense layer at 8192 takes seconds per call: fewer repeats there.
    slow = 3 if n >= 8192 else repeats
    for mode in ("fwd", "fwd+bwd"):
        case = f"n={n} b={batch} L={L} k={k} {mode}"
        for impl, (fn, params) in impls.items():
            run = _no_grad(fn) if mode == "fwd" else _fwd_bwd(fn, x, g, params)
            reps = slow if impl == "nn.Linear" else repeats
            bench.add(case=case, impl=impl, seconds=timeit(run, repeats=reps, warmup=1),
                      baseline=None if impl == "nn.Linear" else
                      (["nn.Linear"] if impl == "torch loop" else ["nn.Linear", "torch loop"]),
                      n=n, batch=batch, L=L, k=k, mode=mode)


def bench_overhead(bench, repeats):
    """Fixed cost per call: a 64 -> 64 layer (L=1, k=8) on 32 rows, vs the bare kernels."""
    from sketchcore import _cpu
    torch.manual_seed(0)
    sk = SKLinear(64, 64, 1, 8, seed=0)
    lin = nn.Linear(64, 64)
    x = torch.randn(32, 64)
    arrays = [t.detach().numpy() for t in (x, sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias)]
    inner = 200

    def many(fn):
        def run():
            for _ in range(inner):
                fn()
        return run

    case = "overhead 64x64 L=1 k=8 b=32 fwd"
    t_kernel = timeit(many(lambda: _cpu.sketched_linear_forward(*arrays)), repeats, 2) / inner
    with torch.no_grad():
        t_lin = timeit(many(lambda: lin(x)), repeats, 2) / inner
        t_loop = timeit(many(lambda: _loop(x, sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias)),
                        repeats, 2) / inner
        t_sk = timeit(many(lambda: sk(x)), repeats, 2) / inner
    bench.add(case=case, impl="nn.Linear", seconds=t_lin, mode="fwd")
    bench.add(case=case, impl="torch loop", seconds=t_loop, baseline=["nn.Linear"], mode="fwd")
    bench.add(case=case, impl="SKLinear", seconds=t_sk, baseline=["nn.Linear", "torch loop"],
              mode="fwd")
    bench.add(case=case, impl="kernel only (NumPy)", seconds=t_kernel, mode="fwd")
    bench.note(f"Per-call overhead of SKLinear above its kernel (bridge, autograd Function, "
               f"module checks): {1e6 * (t_sk - t_kernel):.0f} us per forward call.")

    xg = x.clone().requires_grad_()
    gy = torch.randn(32, 64)
    case = "overhead 64x64 L=1 k=8 b=32 fwd+bwd"
    t_lin = timeit(many(_fwd_bwd(lambda: lin(xg), xg, gy, list(lin.parameters()))), repeats, 2)
    t_loop = timeit(many(_fwd_bwd(lambda: _loop(xg, sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias),
                                  xg, gy, [sk.S1s, sk.S2s, sk.bias])), repeats, 2)
    t_sk = timeit(many(_fwd_bwd(lambda: sk(xg), xg, gy, list(sk.parameters()))), repeats, 2)
    bench.add(case=case, impl="nn.Linear", seconds=t_lin / inner, mode="fwd+bwd")
    bench.add(case=case, impl="torch loop", seconds=t_loop / inner, baseline=["nn.Linear"],
              mode="fwd+bwd")
    bench.add(case=case, impl="SKLinear", seconds=t_sk / inner,
              baseline=["nn.Linear", "torch loop"], mode="fwd+bwd")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="in_features 1024 only and fewer repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = SIZES[:1] if args.quick else SIZES
    bench = Bench("sklinear", title="SKLinear (CPU, float32): sketched layer vs nn.Linear "
                                    "and vs the plain-torch per-term loop")
    for n in sizes:
        for batch in BATCHES:
            for L, k in TERMS:
                bench_config(bench, n, batch, L, k, repeats)
    for n, batch, L, k in EXTRA:
        if n in sizes:
            bench_config(bench, n, batch, L, k, repeats)
    bench_overhead(bench, repeats)
    bench.note(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; "
               "SKLinear's kernels run on torch's OpenMP team with single-threaded OpenBLAS "
               "per block (see sketchcore/_cpu/_linear.pyx).")
    bench.note("Parameters: nn.Linear n*n + n; SKLinear L*k*2n + n (e.g. n=8192, L=1, k=16: "
               f"{8192 * 16 * 2 + 8192:,} vs {8192 * 8192 + 8192:,}).")
    bench.write(columns=["mode"])
    return bench


if __name__ == "__main__":
    main()
