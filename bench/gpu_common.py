"""GPU timing and result tables for the *_gpu benchmarks.

Times come from CUDA events around the measured call after warm-up (median of repeats);
every figure written is a ratio against a baseline measured in the same run.
Results go to ``$SKETCHCORE_BENCH_DIR`` (default ``bench/results``): ``<topic>.md`` + ``.png``.
"""
import os
import statistics

__all__ = ["cuda_time", "torch_time", "torch_time_steps", "GpuBench"]


def cuda_time(fn, repeats=20, warmup=3):
    """Median seconds of ``fn()`` measured with CUDA events on CuPy's current stream."""
    import cupy
    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


class GpuBench:
    """Rows of (case, impl, seconds, baseline impl); ratios are baseline time / impl time."""

    def __init__(self, topic, title):
        self.topic, self.title, self.rows, self.notes = topic, title, [], []

    def add(self, case, impl, seconds, baseline=None, **extra):
        self.rows.append(dict(case=case, impl=impl, seconds=seconds, baseline=baseline, **extra))
        print(f"{self.topic:14s} {case:40s} {impl:28s} {seconds * 1e3:10.3f} ms", flush=True)

    def _time_of(self, case, impl):
        for r in self.rows:
            if r["case"] == case and r["impl"] == impl:
                return r["seconds"]
        return None

    def write(self, device_name):
        out_dir = os.environ.get("SKETCHCORE_BENCH_DIR",
                                 os.path.join(os.path.dirname(__file__), "results"))
        os.makedirs(out_dir, exist_ok=True)
        lines = [f"# {self.title}", "", f"Device: {device_name}. CUDA events, median after "
                 "warm-up; ratio = baseline time / this time (>1: faster than the baseline).", ""]
        lines += ["| case | implementation | time (ms) | baseline | speed-up vs baseline |",
                  "| --- | --- | ---: | --- | ---: |"]
        ratios = []
        for r in self.rows:
            base = self._time_of(r["case"], r["baseline"]) if r["baseline"] else None
            ratio = f"{base / r['seconds']:.2f}x" if base else ""
            if base:
                ratios.append((f"{r['case']}\n{r['impl']}", base / r["seconds"], r["baseline"]))
            lines.append(f"| {r['case']} | {r['impl']} | {r['seconds'] * 1e3:.3f} | "
                         f"{r['baseline'] or ''} | {ratio} |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        path = os.path.join(out_dir, f"{self.topic}.md")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            if ratios:
                fig, ax = plt.subplots(figsize=(10, 0.45 * len(ratios) + 1.5))
                labels = [f"{r[0].replace(chr(10), ' | ')} (vs {r[2]})" for r in ratios]
                ax.barh(range(len(ratios)), [r[1] for r in ratios], color="tab:blue")
                ax.set_yticks(range(len(ratios)), labels, fontsize=7)
                ax.axvline(1.0, color="k", lw=0.8)
                ax.set_xscale("log")
                ax.set_xlabel("speed-up vs baseline (log scale)")
                ax.set_title(self.title, fontsize=9)
                fig.tight_layout()
                fig.savefig(os.path.join(out_dir, f"{self.topic}.png"), dpi=110)
                plt.close(fig)
        except ImportError:
            pass
        return path


def torch_time(fn, repeats=20, warmup=3):
    """Median seconds of ``fn()`` with torch CUDA events on torch's current stream, each
    call starting from an idle GPU."""
    return torch_time_steps(fn, steps=1, repeats=repeats, warmup=warmup)


def torch_time_steps(fn, steps=20, repeats=10, warmup=3):
    """Median seconds per call of ``fn`` called ``steps`` times back to back, as in a
    training loop: the host queues each call while the GPU still runs the one before, so
    host time hides behind GPU time where it is shorter (``steps=1``: every call starts
    from an idle GPU, ``torch_time``). CUDA events around each run of ``steps`` calls, on
    torch's current stream."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3 / steps)
    return statistics.median(times)
