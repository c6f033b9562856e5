"""Sparse-sign / CountSketch operators on the GPU (sparse.cu): apply without storing S,
dense form for checks. Entry definition: sketchcore contracts (SparseSignSketch)."""
import math

import numpy as np

from sketchcore._cuda._loader import launch, grid_size, device_properties
from sketchcore._cuda._common import ctype_of, require_cupy_2d, i32, i64, u64, f64, zero
from sketchcore._cuda._table_cache import slot_tables
from sketchcore._cuda import _trace

__all__ = ["sparse_sign_left", "sparse_sign_right", "sparse_sign_dense", "sparse_sign_indices"]

_CHUNK = 128              # SC_SPARSE_CHUNK in sparse.cu
_SMEM_BUDGET = 100 * 1024  # two blocks per multiprocessor on Hopper (228 KiB)


#: Kernel for the left float32/float64 apply, set by measurement (bench/operators_gpu.py):
#: "slots" (nnz >= 2: per-chunk slot tables list which rows of A hit each row of Y; a
#: thread accumulates 32 floats or 16 doubles of Y in registers), "owned" (float32, nnz >= 2: a
#: block holds d x 32 of Y in shared memory, each thread owns one nonzero index t and adds
#: into its row band without atomics), "red" (a warp per row of A, vector reductions into
#: Y in L2; float32 with n % 4 == 0, float64 with n even), or "smem" (shared-memory tile of
#: Y per block, emulated shared atomics); see sparse.cu. "slots" falls back to "owned"
#: below SLOTS_MIN_D rows of Y, "owned" to "red" where it does not apply (nnz = 1, d too
#: large for shared memory, float64), "red" to "smem". A kernel with a warp per band of S's
#: rows and no atomics but one row at a time per thread was measured slower than "red" (2.9
#: against 2.3 ms for nnz = 8, d = 1024 on 1e6 x 256 float32): latency-bound at 8 warps
#: per SM.
LEFT_METHOD = "slots"
#: Columns per thread of the "owned" kernel (1 or 2; see sc_sparse_apply_owned).
OWNED_VECTOR = 2
#: Smallest d the "slots" kernel takes: from d = 128 on it was measured faster than
#: "owned" (small blocks of rows of Y share a multiprocessor, _slot_blocks_per_sm).
SLOTS_MIN_D = 128
#: Lane groups per warp of the float32 "slots" kernel (1: 64-column tiles, blocks of 512
#: rows of Y; 4: 16-column tiles, blocks of 2048 rows, chunks four times as long; see
#: sc_sparse_apply_slots), or None: 1 up to d = 1024, 4 beyond. Measured on an H200 (nnz =
#: 8, 1e6 x 256, whole call, ms, one / four groups): d = 512, 0.65 / 0.80; d = 1024,
#: 0.74 / 0.79; d = 2048, 1.04 / 0.89; d = 4096, 1.71 / 1.10; d = 8192, 2.98 / 1.50.
SLOT_GROUPS = None

_OWN_C, _OWN_R = 32, 64    # SC_OWN_C, SC_OWN_R in sparse.cu
_OWN_SLAB = _OWN_R << 16   # rows per launch: bounds the hash buffer (rows x nnz int32)
_SLOT_TB = 2048            # rows of Y per block at most (sc_sparse_slots' overflow
                           # entries hold the row within the block in 11 bits)
_SLOT_THREADS = 1024       # SC_SLOT_THREADS in sparse.cu: threads per block at most
_SLOT_OVS = 256            # SC_SLOT_OVS in sparse.cu: staged head of an overflow list
_BUILDER_THREADS = 256    # threads of an sc_sparse_slots block (its launch bounds)
_SLOT_SLAB = 1 << 20       # rows of A per slab of slot tables at most (one slab at 1e6 rows)
_SLOT_BYTES = 128 << 20    # slot tables + overflow lists of a slab at most (large d: shorter)


def _slot_groups(d):
    """Lane groups per warp of the float32 "slots" kernel for d rows of Y (SLOT_GROUPS)."""
    if SLOT_GROUPS is None:
        return 1 if d <= _SLOT_THREADS else 4
    if SLOT_GROUPS not in (1, 4):
        raise ValueError(f"slots kernel: SLOT_GROUPS must be 1, 4 or None, got {SLOT_GROUPS}")
    return SLOT_GROUPS


def _slot_row_bytes(groups=1):
    """Bytes of a staged row of the "slots" kernel: 32 / groups lanes of 8 bytes."""
    return 256 // groups


def _slot_r_max(groups=1):
    """Longest chunk of the "slots" kernel: a slot word's low half holds the byte offset of
    a row (the last zero row's: R + 1) shifted right by two in its bits 2 .. 14 (shift 1,
    see sc_slot_add)."""
    return 4 * 0x7ffc // _slot_row_bytes(groups) - 1


def _slot_shift(R, groups=1):
    """Shift S of the "slots" kernel's places: 0 (plain byte offsets in both halves, one
    instruction fewer per low half) when the chunk's offsets, its two zero rows' (R and
    R + 1) included, fit 16 bits, else 1."""
    return 0 if (R + 1) * _slot_row_bytes(groups) <= 0xfffc else 1


def _slot_plan(d, nnz, tbw, optin, groups=1):
    """(R, H) of the "slots" kernel: rows of A per chunk and words (place pairs) per slot.

    Every row of Y costs one slot load per chunk and a load per filled place pair, so chunks
    should be long: about 4 entries per row of Y and chunk with H = 4 (eight places: a
    Poisson count of mean 4 overflows 0.8% of the entries), else as long as two staged tiles
    fit in shared memory and a row's offset fits a slot's 16 bits (R <= _slot_r_max), with
    H = 2 when that still leaves at most 2.5 entries per row (2 with lane groups). A chunk a
    little too long for byte offsets is cut to the longest that fits them (_slot_shift:
    halved offsets cost instructions). Measured on an H200 at nnz = 8 (1e6 x 256, ms), with
    one float a lane and places per sign: d = 1024, offsets in rows, R = 384, 512, 640, 768
    took 1.47, 1.26, 1.24, 1.43 (longer chunks overflow more); d = 2048, R = 511, 640, 768
    with H = 4 1.31, 1.19, 1.08 (R = 768, H = 2: 1.44); d = 4096, R = 768 with H = 2 / 4
    1.61 / 1.72, R = 511 with H = 2 1.87."""
    row_bytes = _slot_row_bytes(groups)
    fit = (optin - 2 * (tbw * 16 + _SLOT_OVS * 4)) // (2 * row_bytes) - 2   # two tiles
    fit = max(16, min(fit // 16 * 16, _slot_r_max(groups)))
    R = max(16, min(fit, 4 * d // nnz))
    byte_max = 0xfffc // row_bytes - 1       # longest chunk with byte offsets (shift 0)
    if byte_max < R <= byte_max + byte_max // 4:
        R = byte_max
    return R, (4 if R * nnz / d > (2 if groups > 1 else 2.5) else 2)


def _slot_layout(m, d, nnz, optin, groups=1):
    """Geometry of the "slots" kernel with ``groups`` lane groups per warp for m rows of A:
    (tbw, ntb, R, H, ovstride, slab) = rows of Y per block (16 per lane group, blocks of
    2 tbw / groups threads), blocks of rows, chunk length, words per slot, overflow list
    stride (every entry of a (chunk, block) may overflow), rows of A per slab (whole
    chunks, at most _SLOT_SLAB rows and _SLOT_BYTES of tables)."""
    rows_per_warp = 16 * groups
    tbw = min(_SLOT_THREADS // 2 * groups, -(-d // rows_per_warp) * rows_per_warp)
    ntb = -(-d // tbw)
    R, H = _slot_plan(d, nnz, tbw, min(optin, 227 * 1024), groups)
    r_max = _slot_r_max(groups)
    if not 1 <= R <= r_max:
        raise ValueError(f"slots kernel: chunk length R must be in 1..{r_max} for {groups} "
                         f"lane groups, got {R}")

    def band(row):
        return ((row + 1) * nnz - 1) // d
    bands = max(band(min(d, t0 + tbw) - 1) - band(t0) + 1 for t0 in range(0, d, tbw))
    ovstride = -(-(1 + R * bands) // 4) * 4
    chunk_bytes = 4 * ntb * (tbw * H + ovstride)
    slab = min(_SLOT_SLAB // R, max(1, _SLOT_BYTES // chunk_bytes), -(-m // R)) * R
    # Slabs of equal length (whole chunks): a short last slab would leave most
    # multiprocessors idle.
    slabs = -(-m // slab)
    slab = -(-(-(-m // slabs)) // R) * R
    return tbw, ntb, R, H, ovstride, slab


def _apply_slots(A, m, n, lda, d, nnz, seed, stream, Y, ldy, zero_y=False):
    """Y += S @ A through sc_sparse_slots + sc_sparse_apply_slots, slab by slab
    (``_slot_layout``); ``zero_y``: Y is zeroed here, after the first slot tables are
    launched (the GPU starts on them while the host does the rest). The launches of a
    shape are planned once (``_slot_launches``): the host time before the first launch
    is time the GPU waits. An operator's tables are kept from its second apply on
    (``_table_cache.slot_tables``, where they fit one slab), so later applies of it on the
    same CUDA stream launch the apply kernel alone."""
    import cupy
    T = "double" if A.dtype == cupy.float64 else "float"
    G = 1 if T == "double" else _slot_groups(d)
    key = (cupy.cuda.runtime.getDevice(), m, n, lda, ldy, d, nnz, G, T, _SLOT_SLAB,
           _SLOT_BYTES, _slot_plan)                      # tests vary the last three
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= 64:
            _plans.clear()
        plan = _plans[key] = _slot_launches(m, n, lda, ldy, d, nnz, G, T)
    n_sl, n_tables, slabs = plan
    # Slot tables and overflow lists in one allocation; one slab's kept across calls
    # (_table_cache) unless a graph capture or a launch trace would hold on to them.
    cache, tkey, cuda_stream = None, None, None
    if len(slabs) == 1 and slot_tables.limit > 0 and _trace.recording() is None:
        cuda_stream = cupy.cuda.get_current_stream()
        if not cuda_stream.is_capturing():
            cache = slot_tables
            # The tables do not depend on A's width or strides (key[2:5]).
            tkey = key[:2] + key[5:] + (int(seed), int(stream), cuda_stream.ptr)
    kept = cache.get(tkey) if cache is not None else None
    if kept is not None:
        _apply_kept(kept, A, Y, (n, lda, ldy, zero_y), n_sl, slabs[0][3], cuda_stream)
        return Y
    tables = cupy.empty(n_tables, dtype=cupy.uint32)
    _launch_slabs(A, m, Y, tables, n_sl, slabs, (u64(seed), u64(stream)), zero_y)
    if cache is not None:
        cache.offer(tkey, _KeptSlots(tables))
    return Y


def _launch_slabs(A, m, Y, tables, n_sl, slabs, keys, zero_y, build=True):
    """Per slab: its slot tables into ``tables`` (unless ``build`` is False: kept ones),
    Y zeroed after the first (``zero_y``), the apply kernel."""
    SL, OV = tables[:n_sl], tables[n_sl:]
    for j0, rows, builder, apply in slabs:
        if build:
            launch(builder[0], builder[1], (_BUILDER_THREADS,),
                   builder[2] + keys + builder[3] + (SL, OV), shared_mem=builder[4])
        if zero_y:
            zero(Y)
            zero_y = False
        a = A if rows == m else A[j0:j0 + rows]
        launch(apply[0], apply[1], apply[2], (a,) + apply[3] + (SL, OV) + apply[4] + (Y,)
               + apply[5], shared_mem=apply[6])


class _KeptSlots:
    """One operator's kept slot tables (``slot_tables``) and the launch traces (``_trace``)
    of the applies that read them, one per (n, lda, ldy, zero_y): a replay issues the
    memset and the apply kernel from C. The Python path before the launches took 40 us of
    host time a call on the H200 machine, time the GPU waits at the start of a call that
    launches no builder."""
    __slots__ = ("tables", "nbytes", "traces")
    TRACES = 8                # traces kept per operator (widths of A) at most

    def __init__(self, tables):
        self.tables, self.nbytes, self.traces = tables, tables.nbytes, {}


def _apply_kept(kept, A, Y, form, n_sl, apply, cuda_stream):
    """Y += S @ A (Y zeroed first where ``form``'s last entry, zero_y, says so) with
    ``kept``'s tables, in one slab (``apply``: its launch from ``_slot_launches``). Replayed
    from the trace of ``form`` = (n, lda, ldy, zero_y), which the first call of that form
    records while it launches from Python (as do calls whose recording failed)."""
    tables = kept.tables
    trace = kept.traces.get(form)          # None: not recorded yet; False: recording failed
    addresses = [A.data.ptr, Y.data.ptr, tables.data.ptr]
    if trace:
        trace.replay(addresses, 0, cuda_stream.ptr)
        return
    slab = [(0, A.shape[0], None, apply)]
    zero_y = form[3]
    if trace is None:
        if len(kept.traces) >= kept.TRACES:
            kept.traces.clear()
        regions = [(A.data.ptr, A.nbytes, 0, 0), (Y.data.ptr, Y.nbytes, 1, 0),
                   (tables.data.ptr, tables.nbytes, 2, 0)]
        with _trace.record(regions, 3) as rec:
            _launch_slabs(A, A.shape[0], Y, tables, n_sl, slab, (), zero_y, build=False)
        kept.traces[form] = rec.trace if rec.trace is not None else False
    else:
        _launch_slabs(A, A.shape[0], Y, tables, n_sl, slab, (), zero_y, build=False)


_plans = {}          # (device, m, n, lda, ldy, d, nnz, G, T, ...) -> _slot_launches(...)


def _slot_launches(m, n, lda, ldy, d, nnz, groups, ctype="float"):
    """The launches of ``_apply_slots`` for one shape: (slot table words, table and
    overflow words, [(j0, rows, builder launch, apply launch) per slab]), each launch its
    kernel, grid, block and arguments around the per-call ones."""
    sms, optin = device_properties()
    layout = _slot_layout(m, d, nnz, optin, groups)
    tbw, ntb, R, H, ovstride, slab = layout
    chunks_max = slab // R
    n_sl = chunks_max * ntb * tbw * H
    # The last overflow list's staged head reads past its end: pad by one head.
    n_tables = n_sl + chunks_max * ntb * ovstride + _SLOT_OVS
    shift = _slot_shift(R, groups)
    tile = _slot_row_bytes(groups) // (8 if ctype == "double" else 4)   # columns
    gx = -(-n // tile)
    smem = _slot_smem(R, H, tbw, groups)
    threads = 2 * tbw // groups
    per_sm = _slot_blocks_per_sm(threads, smem, optin)
    slabs = []
    for j0 in range(0, m, slab):
        rows = min(slab, m - j0)
        chunks = -(-rows // R)
        # One wave, each block with the same number of (column tile, chunk) pairs (a block
        # per tile and group of chunks left 4 of 132 multiprocessors idle).
        work = gx * chunks
        per_block = -(-work // max(1, min(work, sms * per_sm // ntb)))
        apply = (f"sc_sparse_apply_slots<{H}, {shift}, {groups}, {ctype}>",
                 (-(-work // per_block), 1, ntb), (threads,),
                 (i32(rows), i64(n), i64(lda), i32(d), i32(R)),
                 (i32(ovstride), i32(tbw), i32(ntb), i32(gx), i32(chunks), i32(per_block),
                  f64(1.0 / math.sqrt(nnz))),
                 (i64(ldy),), smem)
        slabs.append((j0, rows, _builder_launch(j0, rows, d, nnz, layout, groups), apply))
    return n_sl, n_tables, slabs


def _builder_launch(j0, rows, d, nnz, layout, groups):
    """sc_sparse_slots' launch for rows j0 .. j0 + rows - 1 of A (at most one slab of
    ``layout``, ``_slot_layout``'s tuple): kernel, grid, the arguments before and after
    (seed, stream), shared memory; the tables SL, OV come last."""
    tbw, ntb, R, H, ovstride, _ = layout
    return (f"sc_sparse_slots<{H}>", (-(-rows // R), ntb),
            (i64(j0), i64(rows), i32(R), i32(d), i32(nnz)),
            (i32(tbw), i32(ntb), i32(ovstride), i32(_slot_row_bytes(groups)),
             i32(_slot_shift(R, groups)), i32(groups)),
            _slot_builder_smem(tbw, H))


def _build_slots(j0, rows, d, nnz, seed, stream, layout, groups, SL, OV):
    """Slot tables SL and overflow lists OV (cupy uint32, laid out as in ``_apply_slots``)
    of rows j0 .. j0 + rows - 1 of A, by sc_sparse_slots (tests read them back)."""
    expr, grid, pre, post, smem = _builder_launch(j0, rows, d, nnz, layout, groups)
    launch(expr, grid, (_BUILDER_THREADS,), pre + (u64(seed), u64(stream)) + post + (SL, OV),
           shared_mem=smem)


def _slot_smem(R, H, tbw, groups=1):
    """Shared memory of sc_sparse_apply_slots: two staged tiles with their two zero rows
    each, two sets of slots and of overflow heads."""
    return 2 * ((R + 2) * _slot_row_bytes(groups) + tbw * 4 * H + _SLOT_OVS * 4)


def _slot_builder_smem(tbw, H):
    """Dynamic shared memory of sc_sparse_slots: a count and 2 H u16 entries per row of Y."""
    return tbw * (4 + 4 * H)


def _slot_blocks_per_sm(threads, smem, optin):
    """Blocks of sc_sparse_apply_slots (``threads`` each) one multiprocessor holds: its
    launch bounds give a thread 64 registers, so _SLOT_THREADS threads fill the register
    file, and shared memory (``optin`` per block plus the 1 KiB each block reserves, as on
    Ampere and Hopper). Small d thus gets several blocks per multiprocessor: one block of
    few warps alone leaves most of its warp slots empty."""
    return max(1, min(_SLOT_THREADS // threads, (optin + 1024) // (smem + 1024)))


def _owned_smem(d, nnz):
    """Shared memory of sc_sparse_apply_owned: Y tile, two stages of A and of hashes."""
    return 4 * (d * _OWN_C + 2 * _OWN_R * _OWN_C + 2 * (_OWN_R + 4) * nnz)


def _apply_owned(A, m, n, lda, d, nnz, seed, stream, Y, ldy):
    """Y += S @ A through sc_sparse_apply_owned, in slabs of at most _OWN_SLAB rows."""
    import cupy
    sms, optin = device_properties()
    smem = _owned_smem(d, nnz)
    per_sm = max(1, min(227 * 1024, optin) // smem)
    tg = min(8, 1 << (nnz - 1).bit_length())             # t lanes: a power of two <= 8
    threads = tg * _OWN_C // OWNED_VECTOR
    gx = -(-n // _OWN_C)
    H = cupy.empty(min(m + _OWN_R, _OWN_SLAB) * nnz, dtype=cupy.int32)
    for j0 in range(0, m, _OWN_SLAB):
        rows = min(_OWN_SLAB, m - j0)
        chunks = -(-rows // _OWN_R)                       # whole chunks of valid hashes
        launch("sc_sparse_hashes", (grid_size(chunks * _OWN_R * nnz),), (256,),
               (i64(j0), i64(chunks), i32(d), i32(nnz), u64(seed), u64(stream), H))
        # One wave: a second, nearly empty wave of one-block-per-SM blocks doubles the time.
        gy = max(1, min(chunks, (sms * per_sm) // gx))
        per_block = -(-chunks // gy) * _OWN_R
        gy = -(-rows // per_block)
        launch(f"sc_sparse_apply_owned<{OWNED_VECTOR}>", (gx, gy), (threads,),
               (A[j0:j0 + rows], i64(rows), i64(n), i64(lda), i32(d), i32(nnz), H,
                f64(1.0 / math.sqrt(nnz)), Y, i64(ldy), i32(tg), i64(per_block)),
               shared_mem=smem)
    return Y


def _apply(A, m, n, saj, sac, d, nnz, seed, stream, Y, syr, syc, method=None):
    """Y = S @ A (Y's contents are overwritten) with A's element (j, c) at A[j*saj + c*sac],
    Y's (row, c) likewise."""
    ct = ctype_of(A)
    method = LEFT_METHOD if method is None else method
    vec = 4 if ct == "float" else 2           # elements per 16-byte load
    rowwise = (ct in ("float", "double") and sac == 1 and syc == 1 and n % vec == 0
               and saj % vec == 0 and syr % vec == 0 and A.data.ptr % 16 == 0
               and Y.data.ptr % 16 == 0)
    if method == "slots" and rowwise and nnz >= 2 and SLOTS_MIN_D <= d < (1 << 21):
        return _apply_slots(A, m, n, saj, d, nnz, seed, stream, Y, syr, zero_y=True)
    zero(Y)
    if (method in ("slots", "owned") and rowwise and ct == "float" and nnz >= 2
            and _owned_smem(d, nnz) <= device_properties()[1]):
        return _apply_owned(A, m, n, saj, d, nnz, seed, stream, Y, syr)
    if method in ("slots", "owned", "red") and rowwise:
        sms, _ = device_properties()
        blocks = max(1, min(-(-m * 32 // 256), sms * 8))
        launch(f"sc_sparse_apply_red<{ct}>", (blocks,), (256,),
               (A, i64(m), i64(n), i64(saj), i32(d), i32(nnz), u64(seed), u64(stream),
                f64(1.0 / math.sqrt(nnz)), Y, i64(syr)))
        return Y
    size = np.dtype(A.dtype).itemsize
    scale = 1.0 / math.sqrt(nnz)
    sms, optin = device_properties()
    budget = min(_SMEM_BUDGET, optin)
    tn = 32
    while tn > 1 and tn >= 2 * n:           # no wider than the columns there are
        tn //= 2
    while tn > 4 and d * tn * size + _CHUNK * nnz * 4 > budget:
        tn //= 2
    smem = d * tn * size + _CHUNK * nnz * 4
    if smem <= budget:
        gx = -(-n // tn)
        per_sm = max(1, (min(optin, 227 * 1024)) // max(smem, 1))
        gy = max(1, min(-(-m // _CHUNK), (2 * sms * per_sm + gx - 1) // gx))
        rows = -(-m // gy)
        rows = -(-rows // _CHUNK) * _CHUNK
        gy = -(-m // rows)
        launch(f"sc_sparse_apply_smem<{ct}>", (gx, gy), (256,),
               (A, i64(m), i64(n), i64(saj), i64(sac), i32(d), i32(nnz), u64(seed), u64(stream),
                f64(scale), Y, i64(syr), i64(syc), i32(tn), i64(rows)), shared_mem=smem)
    else:
        launch(f"sc_sparse_apply_atomic<{ct}>", (min(-(-m * 32 // 256), sms * 16),), (256,),
               (A, i64(m), i64(n), i64(saj), i64(sac), i32(d), i32(nnz), u64(seed), u64(stream),
                f64(scale), Y, i64(syr), i64(syc)))
    return Y


def _check(d, nnz):
    d, nnz = int(d), int(nnz)
    if not 1 <= nnz <= d or d >= 2 ** 31:
        raise ValueError(f"need 1 <= nnz <= d < 2**31, got nnz={nnz}, d={d}")
    return d, nnz


def sparse_sign_left(A, d, nnz, seed, stream, method=None):
    """``S @ A`` for the sparse-sign operator S (d, m); A cupy.ndarray (m, n) -> (d, n).

    ``method`` picks the kernel ("slots", "owned", "red", "smem"; default ``LEFT_METHOD``), for
    benchmarks and tests; each falls back to the next on inputs it does not take."""
    import cupy
    A = require_cupy_2d(A, "A")
    d, nnz = _check(d, nnz)
    m, n = A.shape
    Y = cupy.empty((d, n), dtype=A.dtype)
    if m and n:
        _apply(A, m, n, n, 1, d, nnz, seed, stream, Y, n, 1, method)
    else:
        zero(Y)
    return Y


#: Largest nnz for which the right apply scatters rows of A into shared memory
#: (sc_sparse_apply_right) instead of applying S to a transposed copy of A: one shared
#: atomic per nonzero there. Measured on an H200 (256 x 100000 float32, d = 1024, ms, rows /
#: transposed copy): nnz = 1, 0.172 / 0.279; nnz = 8, 0.572 / 0.314.
RIGHT_ROWS_MAX_NNZ = 2
_RIGHT_ROWS = 8               # SC_RIGHT_ROWS in sparse.cu
_RIGHT_THREADS = 512
_RIGHT_SLAB = 1 << 24         # nonzeros of S per launch at most (bounds the hash buffer)


def _apply_right(A, n, m, d, nnz, seed, stream, Y):
    """Y = A @ S.T through sc_sparse_apply_right (A (n, m), Y (n, d), both C-contiguous),
    S's columns in slabs of at most _RIGHT_SLAB nonzeros; False where a block cannot hold
    one row of Y in shared memory (the caller falls back)."""
    import cupy
    sms, optin = device_properties()
    size = A.itemsize
    rt = min(_RIGHT_ROWS, n, min(optin, 227 * 1024) // (d * size))
    if rt < 1:
        return False
    smem = rt * d * size
    per_sm = max(1, min(2048 // _RIGHT_THREADS, (min(optin, 227 * 1024) + 1024) // (smem + 1024)))
    gy = -(-n // rt)
    slab = max(1, _RIGHT_SLAB // nnz)
    H = cupy.empty(min(m, slab) * nnz, dtype=cupy.int32)
    zero(Y)
    ct = ctype_of(A)
    for j0 in range(0, m, slab):
        cols = min(slab, m - j0)
        launch("sc_sparse_col_hashes", (grid_size(cols * nnz),), (256,),
               (i64(j0), i64(cols), i32(d), i32(nnz), u64(seed), u64(stream), H))
        # About two waves of blocks: each column slab of a block adds its rt rows of Y to
        # Y with one atomic per entry, so no more slabs than filling the device needs.
        gx = max(1, min(-(-cols // _RIGHT_THREADS), -(-2 * sms * per_sm // gy)))
        cw = -(-cols // gx)
        gx = -(-cols // cw)
        launch(f"sc_sparse_apply_right<{ct}>", (gx, gy), (_RIGHT_THREADS,),
               (A[:, j0:j0 + cols], i64(n), i64(cols), i64(m), i32(d), i32(nnz), H,
                f64(1.0 / math.sqrt(nnz)), Y, i64(d), i32(rt), i64(cw)), shared_mem=smem)
    return True


def sparse_sign_right(A, d, nnz, seed, stream, method=None):
    """``A @ S.T`` for the sparse-sign operator S (d, m); A cupy.ndarray (n, m) -> (n, d).

    ``method`` (tests, benchmarks): "rows" (rows of A scattered into rows of Y held in
    shared memory, sc_sparse_apply_right) or "transpose" (the left apply of a transposed
    copy of A); the default takes "rows" for nnz <= RIGHT_ROWS_MAX_NNZ and where the left
    apply would not run its fast kernels, else "transpose"."""
    import cupy
    A = require_cupy_2d(A, "A")
    d, nnz = _check(d, nnz)
    n, m = A.shape
    Y = cupy.empty((n, d), dtype=A.dtype)
    if not (m and n):
        return zero(Y)
    real = A.dtype in (cupy.float32, cupy.float64)     # what both fast paths take
    transposable = (real and LEFT_METHOD != "smem"
                    and n % (4 if A.dtype == cupy.float32 else 2) == 0)
    if method is None:
        method = "rows" if nnz <= RIGHT_ROWS_MAX_NNZ or not transposable else "transpose"
    if method == "rows" and real:
        if _apply_right(A, n, m, d, nnz, seed, stream, Y):
            return Y
    if transposable:
        # A transposed copy (one pass over A) lets the row-per-warp reduction kernel run
        # on contiguous rows instead of the strided shared-memory kernel.
        Yt = sparse_sign_left(cupy.ascontiguousarray(A.T), d, nnz, seed, stream)
        return cupy.ascontiguousarray(Yt.T)
    # Y.T = S @ A.T through strides: A.T's (j, c) = A[c*m + j], Y.T's (r, c) = Y[c*d + r]
    _apply(A, m, n, 1, m, d, nnz, seed, stream, Y, 1, d)
    return Y


def sparse_sign_dense(d, m, nnz, seed, stream, dtype):
    """The dense (d, m) matrix of a sparse-sign operator (tests, small sizes)."""
    import cupy
    d, nnz = _check(d, nnz)
    S = cupy.zeros((d, int(m)), dtype=np.dtype(dtype))
    ct = ctype_of(S)
    if m:
        launch(f"sc_sparse_dense<{ct}>", (grid_size(int(m) * nnz),), (256,),
               (i32(d), i64(m), i32(nnz), u64(seed), u64(stream), f64(1.0 / math.sqrt(nnz)), S))
    return S


def sparse_sign_indices(d, nnz, seed, stream, j0, j1):
    """Nonzero rows and signs of columns j0 .. j1-1: (rows int32, signs float64 of +-1),
    both cupy.ndarray of shape (j1 - j0, nnz); same values as the CPU's."""
    import cupy
    d, nnz = _check(d, nnz)
    nj = max(int(j1) - int(j0), 0)
    rows = cupy.empty((nj, nnz), dtype=cupy.int32)
    signs = cupy.empty((nj, nnz), dtype=cupy.float64)
    if nj:
        launch("sc_sparse_indices", (grid_size(nj * nnz),), (256,),
               (i64(j0), i64(nj), i32(d), i32(nnz), u64(seed), u64(stream), rows, signs))
    return rows, signs
