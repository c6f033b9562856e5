"""Tests of ``python -m sketchcore_torch demo`` (sketchcore_torch/__main__.py, _demo.py)."""
import os
import re
import subprocess
import sys

import pytest
import torch

from sketchcore_torch import _demo
from sketchcore_torch.__main__ import main

STANDARD = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
TUTORIAL = (8 * 64 * (784 + 512) + 512 + 8 * 32 * (512 + 256) + 256 + 8 * 21 * (256 + 128) + 128
            + 4 * 16 * (128 + 10) + 10)


def compressed_params():
    terms, ranks = _demo.COMPRESSED_SCHEDULE
    dims = [(784, 512), (512, 256), (256, 128), (128, 10)]
    return sum(L * k * (i + o) + o for (i, o), L, k in zip(dims, terms, ranks))


ROW = re.compile(r"^(standard|sketched \(tutorial\)|sketched \(compressed\))\s*\|\s*([\d,]+)\s*\|"
                 r"\s*([\d.]+)x\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*$")


def parse_table(text):
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = (int(m.group(2).replace(",", "")), float(m.group(3)),
                                float(m.group(4)), float(m.group(5)))
    return rows


def test_cli_prints_the_table_with_progress_bars():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sketchcore_torch", "demo", "--epochs", "1", "--samples", "300",
         "--seed", "3"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse_table(proc.stdout)
    assert list(rows) == ["standard", "sketched (tutorial)", "sketched (compressed)"]
    assert rows["standard"][0] == STANDARD == 567434
    assert rows["sketched (tutorial)"][0] == TUTORIAL == 934410
    assert rows["sketched (compressed)"][0] == compressed_params()
    assert rows["sketched (compressed)"][0] < rows["standard"][0]
    assert rows["standard"][1] == 1.0
    assert rows["sketched (tutorial)"][1] == pytest.approx(TUTORIAL / STANDARD, abs=0.005)
    for params, ratio, accuracy, seconds in rows.values():
        assert 0.0 <= accuracy <= 1.0 and seconds > 0
    header = next(line for line in proc.stdout.splitlines() if line.startswith("model"))
    assert [c.strip() for c in header.split("|")] == [
        "model", "parameters", "vs standard", "accuracy", "time/epoch (s)"]
    assert "seed 3" in proc.stdout and "total time" in proc.stdout
    # tqdm writes its bars to stderr, one per model, finishing at 100%.
    for name in rows:
        assert name in proc.stderr
    assert proc.stderr.count("100%") >= 3


def test_run_demo_is_reproducible_with_a_seed():
    kwargs = dict(epochs=2, n_samples=200, progress=False, device="cpu")
    a = _demo.run_demo(seed=5, **kwargs)
    b = _demo.run_demo(seed=5, **kwargs)
    c = _demo.run_demo(seed=6, **kwargs)
    assert [r.name for r in a] == ["standard", "sketched (tutorial)", "sketched (compressed)"]
    for ra, rb in zip(a, b):
        assert ra.losses == rb.losses and ra.accuracy == rb.accuracy
        assert ra.parameters == rb.parameters
        assert len(ra.losses) == 2 and all(map(lambda v: v == v, ra.losses))
    assert [r.losses for r in a] != [r.losses for r in c]


def test_run_demo_restores_threads():
    before = torch.get_num_threads()
    _demo.run_demo(epochs=1, n_samples=40, progress=False, device="cpu", threads=1)
    assert torch.get_num_threads() == before


def test_synthetic_dataset_matches_the_tutorial():
    gen = torch.Generator().manual_seed(0)
    X, y = _demo.create_synthetic_dataset(n_samples=105, input_dim=12, n_classes=10,
                                          generator=gen)
    assert X.shape == (100, 12) and y.shape == (100,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [10] * 10
    # Samples sit around their class centre with noise 0.5: within-class spread is 0.5.
    centres = torch.stack([X[y == c].mean(0) for c in range(10)])
    resid = X - centres[y]
    assert 0.4 < resid.std().item() < 0.6


def test_format_table():
    rows = [_demo.DemoResult("standard", 1000, 0.5, 1.25, [1.0]),
            _demo.DemoResult("small", 250, 0.75, 0.5, [1.0])]
    parsed = [line.split("|") for line in _demo.format_table(rows).splitlines()]
    assert [c.strip() for c in parsed[2]] == ["standard", "1,000", "1.00x", "0.5000", "1.250"]
    assert [c.strip() for c in parsed[3]] == ["small", "250", "0.25x", "0.7500", "0.500"]


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--epochs", "--device", "--seed", "{auto,cpu,cuda}"):
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "expected a positive integer, got 0"),
    (["demo", "--epochs", "two"], "expected a positive integer, got 'two'"),
    (["demo", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["demo", "--seed", "-1"], "seed must be in"),
    (["demo", "--samples", "10"], "--samples must be >= 20"),
])
def test_bad_options_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", "cuda"])
    assert exc.value.code == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(n_samples=10), "n_samples must be an integer >= 20"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(threads=-1), "threads must be an integer >= 0"),
    (dict(device="gpu"), "device must be 'auto', 'cpu' or 'cuda'"),
])
def test_run_demo_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _demo.run_demo(progress=False, **kwargs)


@pytest.mark.slow
def test_default_demo_within_two_minutes_and_compressed_keeps_accuracy():
    import time
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sketchcore_torch", "demo", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse_table(proc.stdout)
    assert len(rows) == 3
    assert wall < 120, wall
    standard = rows["standard"][2]
    assert rows["sketched (compressed)"][2] >= standard - 0.02
    assert rows["sketched (compressed)"][0] < 0.25 * rows["standard"][0]
