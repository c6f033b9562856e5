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
The three implementations are timed in turn, round after round (see ``_interleaved``), and
each reports its median.
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
        runs = {impl: _no_grad(fn) if mode == "fwd" else _fwd_bwd(fn, x, g, params)
                for impl, (fn, params) in impls.items()}
        times = _interleaved(runs, repeats, {"nn.Linear": slow})
        for impl, seconds in times.items():
            bench.add(case=case, impl=impl, seconds=seconds,
                      baseline=None if impl == "nn.Linear" else
                      (["nn.Linear"] if impl == "torch loop" else ["nn.Linear", "torch loop"]),
                      n=n, batch=batch, L=L, k=k, mode=mode)


def _interleaved(runs, repeats, fewer=None):
    """Median seconds per implementation, timing them in turn (round-robin).

    On a shared machine load comes in bursts; taking each implementation's repeats back to
    back lets one burst land on one implementation only and skew the ratios. Interleaving
    exposes all of them to the same conditions. Each round is one ``timeit`` call.
    """
    fewer = fewer or {}
    samples = {impl: [] for impl in runs}
    for run in runs.values():
        run()                                   # warm-up (allocations, lazy init)
    for r in range(repeats):
        for impl, run in runs.items():
            if r < fewer.get(impl, repeats):
                samples[impl].append(timeit(run, repeats=1, warmup=0))
    return {impl: float(np.median(ts)) for impl, ts in samples.items()}


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
    with torch.no_grad():
        t = _interleaved({
            "nn.Linear": many(lambda: lin(x)),
            "torch loop": many(lambda: _loop(x, sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias)),
            "SKLinear": many(lambda: sk(x)),
            "kernel only (NumPy)": many(lambda: _cpu.sketched_linear_forward(*arrays)),
        }, repeats)
    t = {k: v / inner for k, v in t.items()}
    bench.add(case=case, impl="nn.Linear", seconds=t["nn.Linear"], mode="fwd")
    bench.add(case=case, impl="torch loop", seconds=t["torch loop"], baseline=["nn.Linear"],
              mode="fwd")
    bench.add(case=case, impl="SKLinear", seconds=t["SKLinear"],
              baseline=["nn.Linear", "torch loop"], mode="fwd")
    bench.add(case=case, impl="kernel only (NumPy)", seconds=t["kernel only (NumPy)"],
              mode="fwd")
    bench.note(f"Per-call overhead of SKLinear above its kernel (bridge, autograd Function, "
               f"module checks): {1e6 * (t['SKLinear'] - t['kernel only (NumPy)']):.0f} us "
               f"per forward call (64x64 layer, 32 rows).")

    xg = x.clone().requires_grad_()
    gy = torch.randn(32, 64)
    case = "overhead 64x64 L=1 k=8 b=32 fwd+bwd"
    t = _interleaved({
        "nn.Linear": many(_fwd_bwd(lambda: lin(xg), xg, gy, list(lin.parameters()))),
        "torch loop": many(_fwd_bwd(lambda: _loop(xg, sk.S1s, sk.S2s, sk.U1s, sk.U2s, sk.bias),
                                    xg, gy, [sk.S1s, sk.S2s, sk.bias])),
        "SKLinear": many(_fwd_bwd(lambda: sk(xg), xg, gy, list(sk.parameters()))),
    }, repeats)
    bench.add(case=case, impl="nn.Linear", seconds=t["nn.Linear"] / inner, mode="fwd+bwd")
    bench.add(case=case, impl="torch loop", seconds=t["torch loop"] / inner,
              baseline=["nn.Linear"], mode="fwd+bwd")
    bench.add(case=case, impl="SKLinear", seconds=t["SKLinear"] / inner,
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
