"""Slot tables of the sparse-sign "slots" kernel kept across applies of one operator
(``_table_cache.slot_tables``), against the float64 product (needs a GPU)."""
import numpy as np
import pytest

from sketchcore.random import make_stream
from _gpu_helpers import gamma, assert_within

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")
from sketchcore import _cuda  # noqa: E402
from sketchcore._cuda import _sparse, _table_cache  # noqa: E402

BUILDER = "sc_sparse_slots"
STREAM = make_stream("sparse_sign", 0, 0)


@pytest.fixture
def cache(monkeypatch):
    """A cache of its own (256 MiB) in place of the process's; the kernels launched from
    Python and the launch-trace replays are noted."""
    from sketchcore._cuda import _trace
    own = _table_cache.TableCache(256 << 20)
    monkeypatch.setattr(_sparse, "slot_tables", own)
    own.launched = launched = []
    launch = _sparse.launch
    monkeypatch.setattr(_sparse, "launch", lambda expr, *a, **k: (launched.append(expr),
                                                                  launch(expr, *a, **k)))
    replay = _trace.Trace.replay
    monkeypatch.setattr(_trace.Trace, "replay",
                        lambda self, *a: (launched.append("replay"), replay(self, *a)))
    return own


def _problem(d, m, n, nnz, seed, dtype):
    from test_kernels_gpu import _sparse_dense_cpu
    A = np.random.default_rng(seed).standard_normal((m, n)).astype(dtype)
    S = _sparse_dense_cpu(d, m, nnz, seed, STREAM, np.float64)
    ref = S @ A.astype(np.float64)
    bound = gamma((S != 0).sum(axis=1).max() + 1, dtype) * (np.abs(S) @ np.abs(A))
    return cupy.asarray(A), ref, bound


def _apply_counting(cache, A, d, nnz, seed):
    """S @ A, whether the call built slot tables, and how it applied them: "launch" (from
    Python) or "replay" (a launch trace of an earlier call)."""
    start = len(cache.launched)
    Y = _cuda.sparse_sign_left(A, d, nnz, seed, STREAM, method="slots")
    new = cache.launched[start:]
    how = ["launch" for e in new if e.startswith("sc_sparse_apply_slots")]
    how += [e for e in new if e == "replay"]
    assert len(how) == 1, new
    return Y, any(e.startswith(BUILDER + "<") for e in new), how[0]


@pytest.mark.parametrize("dtype,d", [(np.float32, 2048), (np.float32, 300), (np.float64, 512)])
def test_tables_kept_from_the_second_apply(cache, dtype, d):
    """The first and second applies of an operator build its tables, the second keeps
    them; the third launches the apply kernel alone, recording it, and later ones replay
    that, for any matrix of the shape; every result is the product."""
    A, ref, bound = _problem(d, 20000, 40, 8, 31, dtype)
    seen = []
    for i in range(5):
        Y, built, how = _apply_counting(cache, A, d, 8, 31)
        seen.append((built, how))
        assert_within(cupy.asnumpy(Y), ref, bound, f"apply {i}, d={d}")
    assert seen == [(True, "launch")] * 2 + [(False, "launch")] + [(False, "replay")] * 2
    assert len(cache) == 1 and cache.nbytes > 0
    B = cupy.asarray(np.random.default_rng(5).standard_normal(A.shape).astype(dtype))
    Y, built, how = _apply_counting(cache, B, d, 8, 31)
    assert (built, how) == (False, "replay")
    from test_kernels_gpu import _sparse_dense_cpu
    S = _sparse_dense_cpu(d, A.shape[0], 8, 31, STREAM, np.float64)
    Bh = cupy.asnumpy(B)
    assert_within(cupy.asnumpy(Y), S @ Bh.astype(np.float64),
                  gamma(9 + 32, dtype) * (np.abs(S) @ np.abs(Bh)), "replay on another matrix")


def test_tables_are_per_operator_and_per_cuda_stream(cache):
    """Another seed, another shape or another CUDA stream never reads kept tables."""
    d, nnz = 1024, 8
    A, ref, bound = _problem(d, 9000, 24, nnz, 32, np.float32)
    for _ in range(2):
        _apply_counting(cache, A, d, nnz, 32)
    B, ref_b, bound_b = _problem(d, 9000, 24, nnz, 33, np.float32)
    Y, built = _apply_counting(cache, B, d, nnz, 33)[:2]
    assert built
    assert_within(cupy.asnumpy(Y), ref_b, bound_b, "another seed")
    Y, built = _apply_counting(cache, A[:7000], d, nnz, 32)[:2]
    assert built
    side = cupy.cuda.Stream(non_blocking=True)
    with side:
        Y, built = _apply_counting(cache, A, d, nnz, 32)[:2]
        side.synchronize()
    assert built
    assert_within(cupy.asnumpy(Y), ref, bound, "another CUDA stream")
    Y, built = _apply_counting(cache, A, d, nnz, 32)[:2]
    assert not built
    assert_within(cupy.asnumpy(Y), ref, bound, "kept tables")


def test_least_recently_used_tables_are_dropped(cache):
    """With room for one operator's tables, keeping a second drops the first."""
    d, nnz = 1024, 8
    A, ref, bound = _problem(d, 9000, 24, nnz, 34, np.float32)
    for _ in range(2):
        _apply_counting(cache, A, d, nnz, 34)
    cache.limit = cache.nbytes
    for _ in range(2):
        _apply_counting(cache, A, d, nnz, 35)
    assert len(cache) == 1
    Y, built = _apply_counting(cache, A, d, nnz, 34)[:2]
    assert built
    assert_within(cupy.asnumpy(Y), ref, bound, "after the drop")
    cache.limit = 0
    for _ in range(3):
        assert _apply_counting(cache, A, d, nnz, 36)[1]


def test_graph_capture_and_launch_traces_bypass_the_cache(cache):
    """A call captured into a CUDA graph builds its own tables (a kept array dropped later
    would dangle in the graph) and keeps none; so does a call a launch trace records."""
    d, nnz = 1024, 8
    A, ref, bound = _problem(d, 9000, 24, nnz, 37, np.float32)
    side = cupy.cuda.Stream(non_blocking=True)
    with side:
        for _ in range(2):
            _apply_counting(cache, A, d, nnz, 37)
        kept = len(cache)
        side.synchronize()
        mode = getattr(cupy.cuda.runtime, "streamCaptureModeRelaxed", None)
        side.begin_capture(*(() if mode is None else (mode,)))
        try:
            Y, built = _apply_counting(cache, A, d, nnz, 37)[:2]
        finally:
            graph = side.end_capture()
        assert built
        Y.fill(np.nan)
        graph.launch(side)
        side.synchronize()
    assert len(cache) == kept
    assert_within(cupy.asnumpy(Y), ref, bound, "graph replay")
    # A launch trace of a call whose tables are kept: it records the build into one of
    # its temporaries, and its replay computes S @ B.
    from sketchcore._cuda import _trace
    B, ref_b, bound_b = _problem(d, 9000, 24, nnz, 38, np.float32)
    for _ in range(2):
        _apply_counting(cache, B, d, nnz, 38)
    kept = len(cache)
    with _trace.record([(B.data.ptr, B.nbytes, 0, 0)], 1) as rec:
        Y, built = _apply_counting(cache, B, d, nnz, 38)[:2]
    assert built and rec.trace is not None, rec.failure
    assert len(cache) == kept
    offset = [o for p, n, o in rec.temps if p == Y.data.ptr]
    assert len(offset) == 1
    work = cupy.zeros(rec.trace.workspace_bytes, dtype=cupy.uint8)
    rec.trace.replay([B.data.ptr], work.data.ptr, cupy.cuda.get_current_stream().ptr)
    Z = work[offset[0]:offset[0] + Y.nbytes].view(cupy.float32).reshape(Y.shape)
    assert_within(cupy.asnumpy(Z), ref_b, bound_b, "trace replay")
