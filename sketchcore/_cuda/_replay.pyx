# cython: language_level=3
"""Compiled replay of launch traces (``_trace``): a recorded call's kernel launches,
cuBLAS products and memsets issued from C, with each recorded address rebuilt from the
new call's base addresses.

No CUDA header or library is needed to build this: the driver and cuBLAS entry points
arrive as addresses (looked up through ctypes in the libraries CuPy has loaded), and the
types below restate their C signatures. A replay is one Python call; per launch it costs
the driver's own call and nothing else (the ctypes calls it replaces took 10-15 us each
on the H200 machine's host).
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

cdef enum:
    MAX_SLOTS = 64

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

    def replay(self, slots, uintptr_t stream, uintptr_t handle=0, uintptr_t lt_handle=0):
        """Issue every step. ``slots``: the base addresses (ints), in slot order, workspace
        last; ``stream``: the CUDA stream; ``handle``: a cuBLAS handle bound to ``stream``
        (needed when ``has_gemm``); ``lt_handle``: the cuBLASLt handle of the plans."""
        cdef uint64_t base[MAX_SLOTS]
        cdef int i, j, status = 0
        cdef Step* st
        cdef uint64_t* c
        if len(slots) != self.nslots:
            raise ValueError(f"slots: expected {self.nslots} addresses, got {len(slots)}")
        for i in range(self.nslots):
            base[i] = <uint64_t>slots[i]
        with nogil:
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
                    break
        if status != 0:
            what = ("cuLaunchKernel", "cublas product", "cuMemsetD8Async")[self.steps[i].kind]
            raise RuntimeError(f"replayed {what} (step {i}) failed with status {status}")
