"""Launch-trace bookkeeping (sketchcore._cuda._trace, _replay) without a GPU: address
classification and argument packing. Replays themselves are checked in test_trace_gpu.py."""
import numpy as np
import pytest

from sketchcore._cuda._replay import CompiledTrace
from sketchcore._cuda._trace import ALIGN, _Fail, _Recorder


def test_addresses_map_to_regions_and_latest_temporary():
    rec = _Recorder([(1000, 100, 0, 0), (5000, 50, 1, 0), (9000, 10, 2, 64), (7000, 0, 1, 0)], 3)
    assert rec.where(1000) == (0, 0) and rec.where(1099) == (0, 99)
    assert rec.where(5049) == (1, 49)
    assert rec.where(9004) == (2, 68)           # a region at an offset inside its slot
    with pytest.raises(_Fail, match="no region"):
        rec.where(1100)                         # one past the end
    with pytest.raises(_Fail):
        rec.where(7000)                         # empty regions are dropped
    rec.allocated(20000, 40)
    rec.allocated(30000, 300)
    assert [t[2] for t in rec.temps] == [0, ALIGN]
    assert rec.where(20010) == (3, 10) and rec.where(30299) == (3, ALIGN + 299)
    rec.allocated(20000, 8)                     # the allocator hands a freed block out again
    assert rec.where(20004) == (3, 3 * ALIGN + 4)
    assert rec.size == 4 * ALIGN


def test_paused_allocations_are_not_temporaries():
    rec = _Recorder([], 0)
    rec.paused = True
    rec.allocated(4096, 1 << 25)
    assert rec.temps == [] and rec.size == 0


def test_steps_are_packed_one_cell_per_argument():
    """CompiledTrace keeps each argument in its own 8-byte cell; replays rewrite only the
    address cells (checked here through a replay with null function addresses: nothing
    to launch, so only the argument checks run)."""
    spec = [("v", np.int32(-7).tobytes()), ("p", (1, 24)), ("v", np.float64(0.5).tobytes()),
            ("p", (2, 0))]
    gemm_args = [0, 1, 0, 8, 4, 16, 4096, ("p", (0, 8)), 14, 8, ("p", (1, 0)), 14, 16, 8192,
                 ("p", (2, 32)), 0, 8, 68, -1]
    ops = [("k", 0x1234, (3, 1, 1), (256, 1, 1), 0, spec), ("g", gemm_args),
           ("m", (2, 64), 100)]
    trace = CompiledTrace(ops, 3, 0, 0, 0)
    assert trace.has_gemm
    assert np.frombuffer(trace.cell(0, 0)[:4], np.int32)[0] == -7
    assert np.frombuffer(trace.cell(0, 2), np.float64)[0] == 0.5
    assert trace.cell(0, 1) == bytes(8)                 # addresses: filled at replay
    assert np.frombuffer(trace.cell(1, 18), np.int64)[0] == -1
    assert np.frombuffer(trace.cell(1, 6), np.uint64)[0] == 4096
    with pytest.raises(ValueError, match="expected 3 addresses"):
        trace.replay([1, 2], 0)
    with pytest.raises(ValueError, match="slot 5"):
        CompiledTrace([("m", (5, 0), 8)], 3, 0, 0, 0)
    with pytest.raises(ValueError, match="more than 8 bytes"):
        CompiledTrace([("k", 1, (1, 1, 1), (1, 1, 1), 0, [("v", bytes(16))])], 1, 0, 0, 0)


def test_products_take_a_cublaslt_plan_only_with_its_entry_point():
    gemm_args = [0, 0, 0, 8, 8, 8, 4096, ("p", (0, 0)), 14, 8, ("p", (0, 256)), 14, 8, 8192,
                 ("p", (1, 0)), 0, 8, 68, -1]
    lt_cells = [11, 4096, ("p", (0, 0)), 12, ("p", (0, 256)), 13, 8192, ("p", (1, 0)), 14,
                ("p", (1, 0)), 14, 15, 16, 1024]
    with pytest.raises(ValueError, match="cublasLtMatmul address"):
        CompiledTrace([("g", gemm_args, lt_cells, 16)], 2, 0, 0, 1, 0)
    trace = CompiledTrace([("g", gemm_args, lt_cells, 16), ("g", gemm_args, None, 256)], 2,
                          0, 0, 1, 2)
    assert trace.has_gemm


def test_entry_points_bind_from_the_one_loaded_library():
    """cuBLAS and cuBLASLt are bound from the copies CuPy loaded, found in the process's
    memory map; checked here on the C library, which every process has."""
    import ctypes
    from sketchcore._cuda._tensorcore import _bind_loaded
    lib, funcs = _bind_loaded("/libc.so", {"abs": [ctypes.c_int]})
    assert funcs["abs"](-5) == 5
    assert _bind_loaded("/libsketchcore-no-such-library.so", {"abs": [ctypes.c_int]}) is None
    assert _bind_loaded("/libc.so", {"sketchcore_no_such_function": []}) is None
