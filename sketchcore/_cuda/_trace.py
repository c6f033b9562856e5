"""Launch traces: the kernel launches, cuBLAS products and memsets of one call, replayed
later with other addresses.

A layer's forward or backward issues the same launches for the same shapes, dtypes and
flags; only the addresses of its arrays change from call to call. ``record`` runs a call
through the ordinary path while noting every launch (``note_launch`` in ``_loader.launch``,
``note_gemm`` in ``_tensorcore.gemm_rm``, ``note_memset`` in ``_common.zero``) and every
temporary allocated through CuPy's allocator; ``Trace.replay`` then issues the same
launches with each address rebuilt from the new arrays: no CuPy arrays, no argument
packing, one workspace for all temporaries, every launch issued from C (``_replay``), the
16-bit products through cuBLASLt plans chosen at recording (``_tensorcore.lt_plan``). On
the H200 machine the Python around the launches was most of an SKLinear call's host time,
which left the layer host-bound (see ``bench/sklinear_gpu.py --host``). An address set that
comes back (torch's caching allocator hands a training loop the same blocks every step) is
captured into a CUDA graph at its second replay and launched as one graph from then on
(``GRAPHS``; ``SKETCHCORE_TRACE_GRAPHS=0`` turns this off).

Addresses are classified when noted: an address inside a caller's region (the call's
arrays, given to ``record``) becomes (region's slot, offset); one inside a temporary
becomes (workspace, temporary's offset + offset), the latest temporary first (an
allocator may hand a freed block out again within the call). Any other address, or an
argument of a type the replay cannot pass, makes the recording fail: ``record.trace`` is
then None and the caller keeps the ordinary path.
"""
import ctypes
import os
import threading

import numpy as np

__all__ = ["record", "recording", "untracked", "Trace", "note_launch", "note_gemm",
           "note_memset", "driver", "ALIGN", "GRAPHS", "GRAPHS_PER_TRACE"]

ALIGN = 256                      # workspace offsets of temporaries (cudaMalloc's alignment)
#: Whether replays capture recurring address sets into CUDA graphs.
GRAPHS = os.environ.get("SKETCHCORE_TRACE_GRAPHS", "1") != "0"
#: Address sets a trace keeps graphs for (then it starts over); a training loop needs a
#: few (the allocator may alternate between blocks).
GRAPHS_PER_TRACE = 16

_state = threading.local()
_driver = []                     # [{name: driver entry point address}], filled once


_DRIVER_FUNCTIONS = (("launch", "cuLaunchKernel"), ("memset", "cuMemsetD8Async"),
                     ("begin", "cuStreamBeginCapture_v2"), ("end", "cuStreamEndCapture"),
                     ("instantiate", "cuGraphInstantiateWithFlags"),
                     ("graph_launch", "cuGraphLaunch"), ("exec_destroy", "cuGraphExecDestroy"),
                     ("graph_destroy", "cuGraphDestroy"),
                     ("is_capturing", "cuStreamIsCapturing"))


def driver():
    """Addresses of the libcuda entry points replays use (cuLaunchKernel, cuMemsetD8Async,
    stream capture and graphs), 0 for any this driver lacks; libcuda is loaded already."""
    if not _driver:
        lib = ctypes.CDLL("libcuda.so.1")
        _driver.append({name: (ctypes.cast(getattr(lib, fn), ctypes.c_void_p).value
                               if hasattr(lib, fn) else 0)
                        for name, fn in _DRIVER_FUNCTIONS})
    return _driver[0]


_graph_api = []                  # [GraphApi or None], filled once
_capture_streams = {}            # device -> CuPy stream that captures (never runs) replays


def _graphs():
    """The driver's graph entry points as a GraphApi, or None where one is missing."""
    if not _graph_api:
        from sketchcore._cuda._replay import GraphApi
        d = driver()
        try:
            _graph_api.append(GraphApi(d["begin"], d["end"], d["instantiate"],
                                       d["graph_launch"], d["exec_destroy"],
                                       d["graph_destroy"], d["is_capturing"]))
        except ValueError:
            _graph_api.append(None)
    return _graph_api[0]


def _capture_stream():
    """A non-blocking stream of the current device to capture on (a blocking one would
    tie capture to the legacy default stream)."""
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    stream = _capture_streams.get(dev)
    if stream is None:
        stream = _capture_streams[dev] = cupy.cuda.Stream(non_blocking=True)
    return stream.ptr


def recording():
    """The active recorder of this thread, or None."""
    return getattr(_state, "recorder", None)


class _Fail(Exception):
    pass


class _Recorder:
    """Regions, temporaries and operations of the call being recorded."""

    def __init__(self, regions, nslots):
        # (start, nbytes, slot, offset): an address a in [start, start + nbytes) becomes
        # (slot, offset + a - start) at replay.
        self.regions = [(int(p), int(n), int(s), int(o)) for p, n, s, o in regions if n > 0]
        self.nslots = int(nslots)
        self.temps = []          # (start, nbytes, workspace offset), in allocation order
        self.size = 0            # workspace bytes so far
        self.ops = []
        self.failure = None
        self.paused = False

    def allocated(self, ptr, nbytes):
        if self.paused:
            return
        self.temps.append((int(ptr), int(nbytes), self.size))
        self.size += -(-int(nbytes) // ALIGN) * ALIGN

    def where(self, ptr):
        """(slot, offset) of a device address; the workspace is slot ``nslots``."""
        for start, nbytes, off in reversed(self.temps):
            if start <= ptr < start + nbytes:
                return self.nslots, off + ptr - start
        for start, nbytes, slot, off in self.regions:
            if start <= ptr < start + nbytes:
                return slot, off + ptr - start
        raise _Fail(f"address {ptr:#x} is in no region of the recorded call")

    def fail(self, why):
        if self.failure is None:
            self.failure = why


class untracked:
    """Context manager: allocations inside it are not temporaries of the recorded call
    (long-lived memory first allocated during a recording, e.g. a cuBLAS workspace)."""

    def __enter__(self):
        self._rec = recording()
        if self._rec is not None:
            self._was, self._rec.paused = self._rec.paused, True
        return self

    def __exit__(self, *exc):
        if self._rec is not None:
            self._rec.paused = self._was
        return False


def note_launch(func_ptr, grid, block, shared_mem, args):
    """Called by ``_loader.launch`` before each kernel launch."""
    rec = recording()
    if rec is None or rec.failure is not None:
        return
    try:
        spec = []
        for a in args:
            if isinstance(a, np.generic):
                spec.append(("v", np.asarray(a).tobytes()))
            elif hasattr(a, "data") and hasattr(a.data, "ptr"):
                spec.append(("p", rec.where(a.data.ptr)))
            else:
                raise _Fail(f"kernel argument of type {type(a).__name__}")
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        block = tuple(int(b) for b in block) + (1,) * (3 - len(block))
        rec.ops.append(("k", int(func_ptr), grid, block, int(shared_mem), spec))
    except _Fail as exc:
        rec.fail(str(exc))


#: Positions of the device pointers among cublasGemmEx's arguments (B, A, C of gemm_rm).
GEMM_POINTERS = (7, 10, 14)
#: Position of cublasGemmEx's computeType argument, and CUBLAS_COMPUTE_32F.
GEMM_COMPUTE, GEMM_COMPUTE_32F = 17, 68


def note_gemm(args):
    """Called by ``_tensorcore.gemm_rm`` with cublasGemmEx's arguments (handle first)."""
    rec = recording()
    if rec is None or rec.failure is not None:
        return
    if args[GEMM_COMPUTE] != GEMM_COMPUTE_32F:
        # Replays plan products with cuBLASLt in float32 scales (_tensorcore.lt_plan).
        rec.fail(f"a product with cuBLAS compute type {args[GEMM_COMPUTE]}, not float32")
        return
    try:
        spec = list(args)
        align = 256                       # what the operands' addresses guarantee, <= 256
        for i in GEMM_POINTERS:
            spec[i] = ("p", rec.where(int(args[i])))
            align = min(align, int(args[i]) & -int(args[i]) or 256)
        rec.ops.append(("g", spec, align))
    except _Fail as exc:
        rec.fail(str(exc))


def note_memset(ptr, nbytes):
    """Called by ``_common.zero`` for each zero fill."""
    rec = recording()
    if rec is None or rec.failure is not None:
        return
    try:
        rec.ops.append(("m", rec.where(int(ptr)), int(nbytes)))
    except _Fail as exc:
        rec.fail(str(exc))


class record:
    """Context manager: run one call through the ordinary path and record it.

    Parameters
    ----------
    regions : list of (address, nbytes, slot, offset)
        Memory the call may address besides its own temporaries: the call's arrays
        (offset 0 in their own slot) and, for a backward, the forward's temporaries
        (inside the forward's workspace slot, at their offsets there).
    nslots : int
        Number of slots ``Trace.replay`` will be given; the workspace comes after them.

    After the block, ``trace`` is the Trace, or None when the recording failed (``failure``
    says why) or the block raised.
    """

    def __init__(self, regions, nslots):
        self._rec = _Recorder(regions, nslots)
        self._alloc = None
        self.trace = None
        self.failure = None

    @property
    def temps(self):
        """(address, nbytes, workspace offset) of the recorded call's temporaries."""
        return list(self._rec.temps)

    def __enter__(self):
        import cupy
        if recording() is not None:
            raise RuntimeError("trace recordings do not nest")
        previous = cupy.cuda.get_allocator()
        rec = self._rec

        def alloc(size):
            mem = previous(size)
            rec.allocated(mem.ptr, size)
            return mem

        self._alloc = cupy.cuda.using_allocator(alloc)
        self._alloc.__enter__()
        _state.recorder = rec
        return self

    def __exit__(self, exc_type, exc, tb):
        _state.recorder = None
        self._alloc.__exit__(exc_type, exc, tb)
        rec = self._rec
        if exc_type is None and rec.failure is None:
            try:
                self.trace = Trace(rec.ops, rec.size, rec.nslots)
            except (_Fail, RuntimeError, OSError, ValueError) as why:
                # The call itself succeeded; without a trace it keeps the ordinary path.
                rec.fail(f"{type(why).__name__}: {why}")
        if self.trace is None:
            self.failure = rec.failure or f"{exc_type.__name__}: {exc}"
        return False


class Trace:
    """Recorded launches, replayed with new addresses (``_replay.CompiledTrace``).

    ``workspace_bytes``: the temporaries' memory, one block the caller allocates.
    ``replay(slots, workspace, stream)``: ``slots`` are the new base addresses (ints) in the
    recorded slot order, ``workspace`` the workspace's address, ``stream`` the CUDA stream
    handle; the current device must be the recorded one. The first replay of an address set
    issues the steps; the second captures them into a CUDA graph (on a stream of its own)
    and launches it, as do later ones (``graph_launches`` counts those launches).
    """

    def __init__(self, ops, workspace_bytes, nslots):
        from sketchcore._cuda._replay import CompiledTrace
        from sketchcore._cuda._tensorcore import lt_plan, lt_handle
        self.workspace_bytes = int(workspace_bytes)
        self.nslots = int(nslots)
        self.launches = len(ops)
        gemm = lt = 0
        self._plans = []                 # cuBLASLt descriptors the compiled steps point to
        steps = []
        for op in ops:
            if op[0] == "g":
                if not gemm:
                    gemm = _gemm_address()
                    if not gemm:
                        raise _Fail("no cublasGemmEx address to replay the products with")
                planned = lt_plan(op[1], op[2])
                if planned is not None:
                    self._plans.append(planned[0])
                    lt = _lt_address()
                op = ("g", op[1], None if planned is None else planned[1], op[2])
            steps.append(op)
        drv = driver()
        self._compiled = CompiledTrace(steps, self.nslots + 1, drv["launch"], drv["memset"],
                                       gemm, lt)
        self._lt = lt_handle() if lt else None
        api = _graphs() if GRAPHS else None
        if api is not None:
            self._compiled.enable_graphs(api, GRAPHS_PER_TRACE)

    @property
    def graph_launches(self):
        """Replays that launched a captured graph."""
        return self._compiled.graph_launches

    def replay(self, slots, workspace, stream):
        addresses = list(slots)
        addresses.append(workspace)
        compiled = self._compiled
        state = compiled.replay_graph(addresses, stream)
        if state == 1:
            return
        lt = self._lt[0] if self._lt else 0
        if state == 2:
            capture = _capture_stream()
            if compiled.capture(addresses, capture, self._cublas(capture), lt) and (
                    compiled.replay_graph(addresses, stream) == 1):
                return
        compiled.replay(addresses, stream, self._cublas(stream), lt)

    def _cublas(self, stream):
        if not self._compiled.has_gemm:
            return 0
        from sketchcore._cuda._tensorcore import _handle
        return _handle(stream)


def _lt_address():
    from sketchcore._cuda._tensorcore import _lt_ctypes
    funcs = _lt_ctypes()
    return 0 if funcs is None else funcs["matmul_address"]


def _gemm_address():
    from sketchcore._cuda._tensorcore import _cublas_ctypes
    funcs = _cublas_ctypes()
    return 0 if funcs is None else ctypes.cast(funcs["cublasGemmEx"], ctypes.c_void_p).value
