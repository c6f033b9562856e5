"""Launch-trace bookkeeping (sketchcore._cuda._trace, _replay) without a GPU: address
classification and argument packing. Replays themselves are checked in test_trace_gpu.py."""
import numpy as np
import pytest

from sketchcore._cuda._replay import CompiledTrace
from sketchcore._cuda import _trace
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


def test_only_float32_products_are_recorded(monkeypatch):
    """A float64 product (compute type 70) fails the recording: replays plan products in
    float32 scales. A float32 one (68) is noted with its addresses classified."""
    rec = _Recorder([(1000, 4096, 0, 0)], 1)
    monkeypatch.setattr(_trace._state, "recorder", rec, raising=False)
    args = [0, 0, 0, 4, 4, 4, 0, 1000, 0, 4, 1512, 0, 4, 0, 2024, 0, 4, 68, -1]
    _trace.note_gemm(args)
    assert rec.failure is None and rec.ops[-1][0] == "g"
    assert [rec.ops[-1][1][i] for i in _trace.GEMM_POINTERS] == [
        ("p", (0, 0)), ("p", (0, 512)), ("p", (0, 1024))]
    _trace.note_gemm(args[:17] + [70, -1])
    assert "compute type 70" in rec.failure and len(rec.ops) == 1


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


class _FakeDriver:
    """The driver entry points a CompiledTrace calls, as C callbacks that log their calls:
    the graph bookkeeping runs without a GPU."""

    def __init__(self):
        import ctypes
        c_int, c_uint, vp = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
        pp = ctypes.POINTER(vp)
        self.log = []
        self.capturing = 0          # what cuStreamIsCapturing reports
        self.fail = set()           # names of entry points that return an error
        self.next_exec = 5000

        def status(name):
            return 700 if name in self.fail else 0

        def launch(func, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
            self.log.append(("launch", stream))
            return status("launch")

        def begin(stream, mode):
            self.log.append(("begin", stream, mode))
            return status("begin")

        def end(stream, graph):
            self.log.append(("end", stream))
            graph[0] = 1234
            return status("end")

        def instantiate(graph_exec, graph, flags):
            self.log.append(("instantiate", graph))
            graph_exec[0] = self.next_exec
            self.next_exec += 1
            return status("instantiate")

        def graph_launch(graph_exec, stream):
            self.log.append(("graph_launch", graph_exec, stream))
            return 0

        def exec_destroy(graph_exec):
            self.log.append(("exec_destroy", graph_exec))
            return 0

        def graph_destroy(graph):
            self.log.append(("graph_destroy", graph))
            return 0

        def is_capturing(stream, out):
            out[0] = self.capturing
            return 0

        types = {
            "launch": ctypes.CFUNCTYPE(c_int, vp, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint,
                                       c_uint, vp, vp, vp),
            "begin": ctypes.CFUNCTYPE(c_int, vp, c_int),
            "end": ctypes.CFUNCTYPE(c_int, vp, pp),
            "instantiate": ctypes.CFUNCTYPE(c_int, pp, vp, ctypes.c_ulonglong),
            "graph_launch": ctypes.CFUNCTYPE(c_int, vp, vp),
            "exec_destroy": ctypes.CFUNCTYPE(c_int, vp),
            "graph_destroy": ctypes.CFUNCTYPE(c_int, vp),
            "is_capturing": ctypes.CFUNCTYPE(c_int, vp, ctypes.POINTER(c_int))}
        fns = dict(launch=launch, begin=begin, end=end, instantiate=instantiate,
                   graph_launch=graph_launch, exec_destroy=exec_destroy,
                   graph_destroy=graph_destroy, is_capturing=is_capturing)
        self._keep = {name: types[name](fn) for name, fn in fns.items()}
        self.addr = {name: ctypes.cast(cb, vp).value for name, cb in self._keep.items()}

    def trace(self, limit=16):
        from sketchcore._cuda._replay import GraphApi
        a = self.addr
        trace = CompiledTrace([("k", 0x1234, (1, 1, 1), (32, 1, 1), 0, [("p", (0, 8))])], 2,
                              a["launch"], 0, 0)
        trace.enable_graphs(GraphApi(a["begin"], a["end"], a["instantiate"], a["graph_launch"],
                                     a["exec_destroy"], a["graph_destroy"], a["is_capturing"]),
                            limit)
        return trace


def test_address_sets_seen_twice_are_captured_then_launched():
    drv = _FakeDriver()
    trace = drv.trace()
    assert trace.replay_graph([100, 200], 7) == 0          # first sighting: replay directly
    trace.replay([100, 200], 7)
    assert drv.log == [("launch", 7)]
    assert trace.replay_graph([100, 200], 7) == 2          # second: capture now
    drv.log.clear()
    assert trace.capture([100, 200], 99)
    assert drv.log == [("begin", 99, 1), ("launch", 99), ("end", 99), ("instantiate", 1234),
                       ("graph_destroy", 1234)]
    drv.log.clear()
    assert trace.replay_graph([100, 200], 7) == 1          # from then on: the graph
    assert drv.log == [("graph_launch", 5000, 7)]
    assert trace.graph_launches == 1 and trace.graph_count == 1
    assert trace.replay_graph([100, 201], 7) == 0          # other addresses: their own entry
    drv.capturing = 1                                      # the caller's stream is captured:
    assert trace.replay_graph([100, 200], 7) == 0          # its launches must land there
    drv.capturing = 0
    del trace
    assert ("exec_destroy", 5000) in drv.log


def test_graph_cache_starts_over_when_full():
    drv = _FakeDriver()
    trace = drv.trace(limit=2)
    for addresses in ([1, 2], [1, 2]):
        trace.replay_graph(addresses, 7)
    assert trace.capture([1, 2], 99) and trace.graph_count == 1
    trace.replay_graph([3, 4], 7)                          # second entry: fits
    drv.log.clear()
    assert trace.replay_graph([5, 6], 7) == 0              # third: start over
    assert drv.log == [("exec_destroy", 5000)] and trace.graph_count == 0
    assert trace.replay_graph([1, 2], 7) == 0              # forgotten: a first sighting again


@pytest.mark.parametrize("failing", ["begin", "launch", "end", "instantiate"])
def test_a_failed_capture_ends_capture_and_replays_directly(failing):
    drv = _FakeDriver()
    trace = drv.trace()
    trace.replay_graph([1, 2], 7)
    assert trace.replay_graph([1, 2], 7) == 2
    drv.fail.add(failing)
    drv.log.clear()
    assert not trace.capture([1, 2], 99)
    if failing != "begin":                                 # capture began: it was ended
        assert ("end", 99) in drv.log
    assert trace.replay_graph([1, 2], 7) == 0 and trace.graph_count == 0
    with pytest.raises(RuntimeError, match="needs enable_graphs"):
        CompiledTrace([], 1, 0, 0, 0).capture([1], 99)
    from sketchcore._cuda._replay import GraphApi
    with pytest.raises(ValueError, match="needs an address"):
        GraphApi(1, 2, 3, 4, 5, 6, 0)
