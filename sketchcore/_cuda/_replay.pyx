# cython: language_level=3
"""Compiled replay of launch traces (``_trace``): a recorded call's kernel launches,
cuBLAS products and memsets issued from C, with each recorded address rebuilt from the
new call's base addresses.

No CUDA header or library is needed to build this: the driver and cuBLAS entry points
arrive as addresses (looked up through ctypes in the libraries CuPy has loaded), and the
types below restate their C signatures. A replay is one Python call; per launch it costs
the driver's own call and nothing else (the ctypes calls it replaces took 10-15 us each
on the H200 machine's host).

An address set seen twice is captured into a CUDA graph (``enable_graphs``), and later
calls with the same addresses launch that graph: one driver call instead of one per step,
which matters for cuBLASLt products (about 15 us of host time each on that host). Torch's
caching allocator hands a training loop the same blocks step after step, so the same
address sets come back.
"""
from libc.stdint cimport uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

ctypedef int (*launch_fn)(void* func, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          unsigned by, unsigned bz, unsigned smem, void* stream,
                          void** params, void** extra) noexcept nogil
ctypedef int (*memset_fn)(uint64_t dst, unsigned char value, size_t n,
                          void* stream) noexcept nogil
ctypedef int (*gemm_fn)(void* handle, int opa, int opb, int m, int n, int k,
                        const void* alpha, const void* A, int atype, int lda, const void* B,
                        int btype, int ldb, const void* beta, void* C, int ctype, int ldc,
                        int compute, int algo) noexcept nogil
ctypedef int (*lt_fn)(void* handle, void* desc, const void* alpha, const void* A, void* adesc,
                      const void* B, void* bdesc, const void* beta, const void* C,
                      void* cdesc, void* D, void* ddesc, const void* algo, void* workspace,
                      size_t workspace_bytes, void* stream) noexcept nogil

ctypedef int (*begin_capture_fn)(void* stream, int mode) noexcept nogil
ctypedef int (*end_capture_fn)(void* stream, void** graph) noexcept nogil
ctypedef int (*instantiate_fn)(void** graph_exec, void* graph,
                               unsigned long long flags) noexcept nogil
ctypedef int (*graph_launch_fn)(void* graph_exec, void* stream) noexcept nogil
ctypedef int (*destroy_fn)(void* handle) noexcept nogil
ctypedef int (*is_capturing_fn)(void* stream, int* status) noexcept nogil

cdef enum:
    MAX_SLOTS = 64
    CAPTURE_THREAD_LOCAL = 1      # CUstreamCaptureMode: other threads' calls stay legal
    GRAPH_FAILED = -1             # an address set whose capture failed: replayed directly

cdef enum StepKind:
    KERNEL = 0
    GEMM = 1
    MEMSET = 2

cdef struct Fix:              # cell <- base[slot] + offset
    uint64_t* cell
    int slot
    uint64_t offset

cdef struct Step:
    int kind
    void* func
    unsigned grid[3]
    unsigned block[3]
    unsigned smem
    uint64_t* cells            # one 8-byte cell per argument (kernel: parameters; gemm: args)
    void** params              # kernel: the cells' addresses
    int nfix
    Fix* fixes
    size_t nbytes              # memset
    uint64_t* lt               # gemm: cublasLtMatmul's arguments after the handle, or NULL
    uint64_t align_mask        # gemm: the cuBLASLt plan needs addresses with these bits 0


cdef class GraphApi:
    """The driver's stream-capture and graph entry points (addresses; see ``_trace``).

    Parameters
    ----------
    begin, end, instantiate, launch, exec_destroy, graph_destroy, is_capturing : int
        Addresses of cuStreamBeginCapture_v2, cuStreamEndCapture,
        cuGraphInstantiateWithFlags, cuGraphLaunch, cuGraphExecDestroy, cuGraphDestroy and
        cuStreamIsCapturing.
    """
    cdef begin_capture_fn begin
    cdef end_capture_fn end
    cdef instantiate_fn instantiate
    cdef graph_launch_fn launch
    cdef destroy_fn exec_destroy
    cdef destroy_fn graph_destroy
    cdef is_capturing_fn is_capturing

    def __cinit__(self, uintptr_t begin, uintptr_t end, uintptr_t instantiate,
                  uintptr_t launch, uintptr_t exec_destroy, uintptr_t graph_destroy,
                  uintptr_t is_capturing):
        if not (begin and end and instantiate and launch and exec_destroy and graph_destroy
                and is_capturing):
            raise ValueError("every graph entry point needs an address")
        self.begin = <begin_capture_fn><void*>begin
        self.end = <end_capture_fn><void*>end
        self.instantiate = <instantiate_fn><void*>instantiate
        self.launch = <graph_launch_fn><void*>launch
        self.exec_destroy = <destroy_fn><void*>exec_destroy
        self.graph_destroy = <destroy_fn><void*>graph_destroy
        self.is_capturing = <is_capturing_fn><void*>is_capturing


cdef class CompiledTrace:
    """The steps of a ``_trace`` recording, ready to issue from C.

    Parameters
    ----------
    ops : list
        The recorder's operations: ("k", func, grid, block, smem, spec) with spec items
        ("v", bytes) or ("p", (slot, offset)); ("g", args) with cublasGemmEx's arguments,
        device pointers as ("p", (slot, offset)), the handle (args[0]) filled at replay;
        ("m", (slot, offset), nbytes). A product may carry a cuBLASLt plan:
        ("g", args, lt, align) with ``lt`` cublasLtMatmul's arguments after the handle
        (``_tensorcore.lt_plan``; operands filled from args at replay) and ``align`` the
        byte alignment it needs of them; cublasGemmEx runs where the addresses lack it.
    nslots : int
        Base addresses a replay takes (the workspace's included).
    launch, memset, gemm, lt : int
        Addresses of cuLaunchKernel, cuMemsetD8Async, cublasGemmEx, cublasLtMatmul (0
        where unused).
    """
    cdef Step* steps
    cdef int nsteps
    cdef int nslots
    cdef launch_fn launch
    cdef memset_fn memset
    cdef gemm_fn gemm
    cdef lt_fn lt
    cdef readonly bint has_gemm
    cdef GraphApi graph_api
    cdef dict graphs              # address tuple -> graph exec, 0 (seen once), GRAPH_FAILED
    cdef int graph_limit
    cdef readonly long long graph_launches

    def __cinit__(self, list ops, int nslots, uintptr_t launch, uintptr_t memset,
                  uintptr_t gemm, uintptr_t lt=0):
        cdef Step* st
        cdef int i, j, nargs, nfix
        if nslots > MAX_SLOTS:
            raise ValueError(f"nslots: at most {MAX_SLOTS}, got {nslots}")
        self.nslots = nslots
        self.launch = <launch_fn><void*>launch
        self.memset = <memset_fn><void*>memset
        self.gemm = <gemm_fn><void*>gemm
        self.lt = <lt_fn><void*>lt
        self.nsteps = len(ops)
        self.steps = <Step*>calloc(max(1, self.nsteps), sizeof(Step))
        if self.steps == NULL:
            raise MemoryError()
        for i, op in enumerate(ops):
            st = &self.steps[i]
            if op[0] == "k":
                st.kind = KERNEL
                _, func, grid, block, smem, spec = op
                st.func = <void*><uintptr_t>func
                for j in range(3):
                    st.grid[j] = grid[j]
                    st.block[j] = block[j]
                st.smem = smem
                args = spec
            elif op[0] == "g":
                st.kind = GEMM
                args = [("p", a[1]) if isinstance(a, tuple) else ("v", int(a))
                        for a in op[1]]
                self.has_gemm = True
                if len(op) > 2 and op[2] is not None:
                    if lt == 0:
                        raise ValueError("a cuBLASLt plan needs the cublasLtMatmul address")
                    st.lt = <uint64_t*>calloc(len(op[2]), sizeof(uint64_t))
                    if st.lt == NULL:
                        raise MemoryError()
                    for j, a in enumerate(op[2]):
                        st.lt[j] = 0 if isinstance(a, tuple) else <uint64_t>(<long long>a)
                    st.align_mask = <uint64_t>op[3] - 1
            else:
                st.kind = MEMSET
                args = [("p", op[1])]
                st.nbytes = op[2]
            nargs = len(args)
            st.cells = <uint64_t*>calloc(max(1, nargs), sizeof(uint64_t))
            st.params = <void**>calloc(max(1, nargs), sizeof(void*))
            nfix = sum(1 for a in args if a[0] == "p")
            st.fixes = <Fix*>calloc(max(1, nfix), sizeof(Fix))
            if st.cells == NULL or st.params == NULL or st.fixes == NULL:
                raise MemoryError()
            st.nfix = 0
            for j, (kind, value) in enumerate(args):
                st.params[j] = <void*>&st.cells[j]
                if kind == "p":
                    slot, offset = value
                    if not 0 <= slot < nslots:
                        raise ValueError(f"slot {slot} outside 0..{nslots - 1}")
                    st.fixes[st.nfix].cell = &st.cells[j]
                    st.fixes[st.nfix].slot = slot
                    st.fixes[st.nfix].offset = offset
                    st.nfix += 1
                elif isinstance(value, bytes):
                    if len(value) > 8:
                        raise ValueError("a kernel parameter of more than 8 bytes")
                    memcpy(&st.cells[j], <const char*>value, len(value))
                else:
                    st.cells[j] = <uint64_t>(<long long>value)

    def __dealloc__(self):
        cdef int i
        if self.graphs is not None and self.graph_api is not None:
            self._drop_graphs()
        if self.steps != NULL:
            for i in range(self.nsteps):
                free(self.steps[i].cells)
                free(self.steps[i].params)
                free(self.steps[i].fixes)
                free(self.steps[i].lt)
            free(self.steps)

    def cell(self, int step, int index):
        """The 8 bytes of a step's argument cell (for tests)."""
        if not 0 <= step < self.nsteps:
            raise IndexError(step)
        return (<char*>&self.steps[step].cells[index])[:8]

    cdef int _fill(self, slots, uint64_t* base) except -1:
        cdef int i
        if len(slots) != self.nslots:
            raise ValueError(f"slots: expected {self.nslots} addresses, got {len(slots)}")
        for i in range(self.nslots):
            base[i] = <uint64_t>slots[i]
        return 0

    cdef int _issue(self, const uint64_t* base, uintptr_t stream, uintptr_t handle,
                    uintptr_t lt_handle, int* failed) noexcept nogil:
        """Every step on ``stream``; the first nonzero status (its step in ``failed``)."""
        cdef int i, j, status = 0
        cdef Step* st
        cdef uint64_t* c
        for i in range(self.nsteps):
            st = &self.steps[i]
            for j in range(st.nfix):
                st.fixes[j].cell[0] = base[st.fixes[j].slot] + st.fixes[j].offset
            if st.kind == KERNEL:
                status = self.launch(st.func, st.grid[0], st.grid[1], st.grid[2],
                                     st.block[0], st.block[1], st.block[2], st.smem,
                                     <void*>stream, st.params, NULL)
            elif st.kind == GEMM and st.lt != NULL and lt_handle != 0 and (
                    (st.cells[7] | st.cells[10] | st.cells[14]) & st.align_mask) == 0:
                c = st.lt
                c[2] = st.cells[7]
                c[4] = st.cells[10]
                c[7] = st.cells[14]
                c[9] = st.cells[14]
                status = self.lt(<void*>lt_handle, <void*>c[0], <const void*>c[1],
                                 <const void*>c[2], <void*>c[3], <const void*>c[4],
                                 <void*>c[5], <const void*>c[6], <const void*>c[7],
                                 <void*>c[8], <void*>c[9], <void*>c[10],
                                 <const void*>c[11], <void*>c[12], <size_t>c[13],
                                 <void*>stream)
            elif st.kind == GEMM:
                c = st.cells
                status = self.gemm(<void*>handle, <int>c[1], <int>c[2], <int>c[3],
                                   <int>c[4], <int>c[5], <const void*>c[6],
                                   <const void*>c[7], <int>c[8], <int>c[9],
                                   <const void*>c[10], <int>c[11], <int>c[12],
                                   <const void*>c[13], <void*>c[14], <int>c[15],
                                   <int>c[16], <int>c[17], <int>c[18])
            else:
                status = self.memset(st.cells[0], 0, st.nbytes, <void*>stream)
            if status != 0:
                failed[0] = i
                return status
        return 0

    def replay(self, slots, uintptr_t stream, uintptr_t handle=0, uintptr_t lt_handle=0):
        """Issue every step. ``slots``: the base addresses (ints), in slot order, workspace
        last; ``stream``: the CUDA stream; ``handle``: a cuBLAS handle bound to ``stream``
        (needed when ``has_gemm``); ``lt_handle``: the cuBLASLt handle of the plans."""
        cdef uint64_t base[MAX_SLOTS]
        cdef int status, failed = 0
        self._fill(slots, base)
        with nogil:
            status = self._issue(base, stream, handle, lt_handle, &failed)
        if status != 0:
            what = ("cuLaunchKernel", "cublas product", "cuMemsetD8Async")[self.steps[failed].kind]
            raise RuntimeError(f"replayed {what} (step {failed}) failed with status {status}")

    # ------------------------------------------------------------------ CUDA graphs
    def enable_graphs(self, GraphApi api, int limit=16):
        """Capture address sets seen twice into CUDA graphs (``replay_graph``), keeping at
        most ``limit`` address sets (then starting over)."""
        if limit < 1:
            raise ValueError(f"limit: expected at least 1, got {limit}")
        self.graph_api = api
        self.graph_limit = limit
        if self.graphs is None:
            self.graphs = {}

    @property
    def graph_count(self):
        """Graphs captured and kept."""
        return 0 if self.graphs is None else sum(1 for v in self.graphs.values() if v > 0)

    def replay_graph(self, slots, uintptr_t stream):
        """Launch the graph captured for these addresses on ``stream``.

        Returns 1 when it was launched; 2 when these addresses were seen once before and
        should be captured now (``capture``); 0 when the caller should replay directly
        (first sighting, a failed capture, graphs not enabled, or ``stream`` itself being
        captured, e.g. by torch.cuda.graph: its launches must land in that capture)."""
        cdef int capturing = 0, status
        cdef uintptr_t graph_exec
        if self.graph_api is None:
            return 0
        if self.graph_api.is_capturing(<void*>stream, &capturing) != 0 or capturing != 0:
            return 0
        key = tuple(slots)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.graph_limit:
                self._drop_graphs()
            self.graphs[key] = 0
            return 0
        if entry == 0:
            return 2
        if entry == GRAPH_FAILED:
            return 0
        graph_exec = <uintptr_t>entry
        status = self.graph_api.launch(<void*>graph_exec, <void*>stream)
        if status != 0:
            raise RuntimeError(f"cuGraphLaunch failed with status {status}")
        self.graph_launches += 1
        return 1

    def capture(self, slots, uintptr_t capture_stream, uintptr_t handle=0,
                uintptr_t lt_handle=0):
        """Capture the steps for these addresses on ``capture_stream`` (a stream of its own,
        not the caller's: capture issues nothing) into a graph kept for ``replay_graph``.
        ``handle`` is a cuBLAS handle bound to ``capture_stream``. Returns whether it
        worked; a failure marks the addresses for direct replays."""
        cdef uint64_t base[MAX_SLOTS]
        cdef int status, ended, failed = 0
        cdef void* graph = NULL
        cdef void* graph_exec = NULL
        cdef GraphApi api = self.graph_api
        if api is None:
            raise RuntimeError("capture needs enable_graphs first")
        self._fill(slots, base)
        key = tuple(slots)
        with nogil:
            status = api.begin(<void*>capture_stream, CAPTURE_THREAD_LOCAL)
            if status == 0:
                status = self._issue(base, capture_stream, handle, lt_handle, &failed)
                # Ended whatever happened, so that the stream leaves capture mode.
                ended = api.end(<void*>capture_stream, &graph)
                if status == 0:
                    status = ended
                if status == 0 and graph != NULL:
                    status = api.instantiate(&graph_exec, graph, 0)
                if graph != NULL:
                    api.graph_destroy(graph)
        if status != 0 or graph_exec == NULL:
            self.graphs[key] = GRAPH_FAILED
            return False
        if len(self.graphs) >= self.graph_limit and key not in self.graphs:
            self._drop_graphs()
        self.graphs[key] = <uintptr_t>graph_exec
        return True

    cdef void _drop_graphs(self):
        # A C method: __dealloc__ calls it, where Python-level methods should not run.
        cdef uintptr_t graph_exec
        if self.graphs is None:
            return
        for value in self.graphs.values():
            if value > 0:
                graph_exec = <uintptr_t>value
                # In-flight graphs finish before the driver frees them.
                self.graph_api.exec_destroy(<void*>graph_exec)
        self.graphs.clear()
