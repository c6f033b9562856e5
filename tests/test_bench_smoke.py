"""Smoke run of the operator benchmark (``python -m bench.operators --quick``) at tiny sizes:
the harness must time every kind, write a Markdown table with ratio columns and a PNG."""
import os

import pytest


@pytest.mark.bench
def test_operators_bench_quick(tmp_path):
    from bench import operators
    bench = operators.run(m=3000, n=16, d=64, nnz=4, repeats=1, warmup=1, topic="smoke",
                          out_dir=str(tmp_path))
    md = (tmp_path / "smoke.md").read_text()
    assert os.path.getsize(tmp_path / "smoke.png") > 1000
    for case in ("gaussian", "sign", "sparse_sign nnz=4", "countsketch", "srht"):
        assert bench.seconds(case, "sketchcore") > 0
        assert bench.ratio(case, "sketchcore", "copy of A") is not None
        assert f"| {case} | sketchcore |" in md
    assert "vs scipy csr (prebuilt)" in md and "vs numpy dense" in md
    # The operator products the benchmark times are correct (float64 reference).
    assert all(r["rel_err"] < 1e-5 for r in bench.rows if r["impl"] == "sketchcore")


@pytest.mark.bench
def test_quick_cli(tmp_path):
    from bench import operators
    operators.main(["--quick", "--repeats", "1", "--out-dir", str(tmp_path)])
    assert (tmp_path / "operators_quick.md").exists()
