"""Shared benchmark harness: timing, ratio tables and plots.

Every figure is a ratio against a baseline measured in the same run, never a lone time::

    from bench.common import Bench, timeit
    bench = Bench("operators", title="Sketch operators")
    t = timeit(lambda: S @ A, repeats=5, warmup=1)
    bench.add(case="gaussian", impl="numpy", seconds=t0)
    bench.add(case="gaussian", impl="sketchcore", seconds=t, baseline=["numpy", "copy of A"])
    bench.write()          # bench/results/operators.md + operators.png

Ratios are ``baseline time / this time``: above 1 means faster than the baseline. Results go
to ``$SKETCHCORE_BENCH_DIR`` (default ``bench/results``) unless ``out_dir`` is given.
"""
import datetime
import os
import platform
import statistics
import time

__all__ = ["timeit", "Bench", "machine_info"]


def timeit(fn, repeats=5, warmup=1):
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    Parameters
    ----------
    fn : callable
        Called with no arguments; its result is discarded.
    repeats : int, default 5
        Timed calls (>= 1).
    warmup : int, default 1
        Untimed calls first (page faults, caches, lazy initialisation).

    Returns
    -------
    float
        The median time in seconds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """dict: CPU model, logical cores, Python/NumPy/SciPy versions, BLAS, UTC date."""
    import numpy
    import scipy
    info = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "logical cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{d['internal_api']} {d['version']} ({d['num_threads']} threads)"
                for d in threadpool_info() if d.get("user_api") == "blas"]
        info["BLAS"] = ", ".join(sorted(set(blas))) or "unknown"
    except Exception:   # threadpoolctl is optional for the harness
        pass
    try:
        import sketchcore
        info["sketchcore"] = sketchcore.__version__
    except Exception:
        pass
    return info


def _as_list(baseline):
    if baseline is None:
        return []
    if isinstance(baseline, str):
        return [baseline]
    return list(baseline)


def _fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


class Bench:
    """Collects timed rows of one topic and writes them as a ratio table and a plot.

    Parameters
    ----------
    topic : str
        File stem: ``<out_dir>/<topic>.md`` and ``<topic>.png``.
    title : str, optional
        Heading of the table (default: the topic).
    out_dir : str, optional
        Directory of the results (default ``$SKETCHCORE_BENCH_DIR`` or ``bench/results``).
    """

    def __init__(self, topic, title=None, out_dir=None):
        self.topic = topic
        self.title = title or topic
        self.out_dir = out_dir or os.environ.get(
            "SKETCHCORE_BENCH_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results"))
        self.rows = []
        self.notes = []

    def add(self, case, impl, seconds, baseline=None, **extra):
        """Record one measurement.

        Parameters
        ----------
        case : str
            What is computed (rows of one case are compared with each other).
        impl : str
            Who computes it.
        seconds : float
            Measured time (``timeit``).
        baseline : str or list of str, optional
            ``impl`` names of the same case to report ratios against.
        **extra
            More columns (sizes, errors, ...), written when named in ``write(columns=...)``.
        """
        row = dict(case=case, impl=impl, seconds=float(seconds), baseline=_as_list(baseline))
        row.update(extra)
        self.rows.append(row)
        print(f"{self.topic:12s} {case:28s} {impl:26s} {_fmt_time(seconds):>12s}", flush=True)
        return row

    def note(self, text):
        """Add a line under the table (what was measured, how)."""
        self.notes.append(text)

    def seconds(self, case, impl):
        """Recorded time of (case, impl), or None."""
        for r in self.rows:
            if r["case"] == case and r["impl"] == impl:
                return r["seconds"]
        return None

    def ratio(self, case, impl, baseline):
        """``baseline time / impl time`` for one case, or None when either is missing."""
        t, b = self.seconds(case, impl), self.seconds(case, baseline)
        if t is None or b is None or t <= 0:
            return None
        return b / t

    def _baselines(self):
        names = []
        for r in self.rows:
            for b in r["baseline"]:
                if b not in names:
                    names.append(b)
        return names

    def markdown(self, columns=None):
        """The results as a Markdown document (str)."""
        bases = self._baselines()
        if columns is None:
            skip = {"case", "impl", "seconds", "baseline"}
            columns = []
            for r in self.rows:
                columns += [k for k in r if k not in skip and k not in columns]
        info = machine_info()
        lines = [f"# {self.title}", "",
                 "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + ".", "",
                 "Median wall-clock time after warm-up. Ratio columns: baseline time / this "
                 "time, measured in the same run (>1: faster than that baseline).", ""]
        head = ["case", "implementation", "time"] + [f"vs {b}" for b in bases] + list(columns)
        lines.append("| " + " | ".join(head) + " |")
        lines.append("| " + " | ".join(["---", "---", "---:"] + ["---:"] * (len(head) - 3)) + " |")
        for r in self.rows:
            cells = [str(r["case"]), str(r["impl"]), _fmt_time(r["seconds"])]
            for b in bases:
                q = self.ratio(r["case"], r["impl"], b) if b in r["baseline"] else None
                cells.append(f"{q:.2f}x" if q is not None else "")
            for c in columns:
                v = r.get(c, "")
                cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def plot(self, path):
        """Bar chart of every (impl vs baseline) ratio, grouped by case, to ``path`` (PNG)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        bars = []
        for r in self.rows:
            for b in r["baseline"]:
                q = self.ratio(r["case"], r["impl"], b)
                if q is not None:
                    bars.append((r["case"], f"{r['impl']} vs {b}", q))
        if not bars:
            return None
        labels = sorted({lab for _, lab, _ in bars}, key=[lab for _, lab, _ in bars].index)
        cases = sorted({c for c, _, _ in bars}, key=[c for c, _, _ in bars].index)
        width = 0.8 / len(labels)
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases) + 2), 4.5))
        for k, lab in enumerate(labels):
            xs, ys = [], []
            for i, c in enumerate(cases):
                for cc, ll, q in bars:
                    if cc == c and ll == lab:
                        xs.append(i + (k - (len(labels) - 1) / 2) * width)
                        ys.append(q)
            ax.bar(xs, ys, width=width, label=lab)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("baseline time / time (log; >1 faster)")
        ax.set_title(self.title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, columns=None, plot=True):
        """Write ``<topic>.md`` (and ``<topic>.png`` when ``plot``); returns the .md path."""
        os.makedirs(self.out_dir, exist_ok=True)
        md = os.path.join(self.out_dir, f"{self.topic}.md")
        with open(md, "w") as fh:
            fh.write(self.markdown(columns))
        if plot:
            self.plot(os.path.join(self.out_dir, f"{self.topic}.png"))
        print(f"wrote {md}", flush=True)
        return md
