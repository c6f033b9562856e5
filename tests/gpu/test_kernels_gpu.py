"""CUDA kernels against the CPU kernels and plain NumPy references (needs a GPU)."""
import numpy as np
import pytest
import scipy.linalg

from sketchcore import _cpu
from sketchcore.random import make_stream
from _gpu_helpers import gamma, assert_within, ulp_diff32

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")
from sketchcore import _cuda  # noqa: E402

KNOWN = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
         ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
         ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
          (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
SEEDS = [0, 12345, 2 ** 64 - 1]


def test_philox_known_answers_on_gpu():
    ctr = cupy.asarray(np.array([k[0] for k in KNOWN], dtype=np.uint32))
    key = cupy.asarray(np.array([k[1] for k in KNOWN], dtype=np.uint32))
    out = cupy.asnumpy(_cuda.philox4x32_batch(ctr, key))
    np.testing.assert_array_equal(out, np.array([k[2] for k in KNOWN], dtype=np.uint32))
    for c, k, want in KNOWN:
        np.testing.assert_array_equal(_cuda.philox4x32(c, k), np.array(want, dtype=np.uint32))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("start", [0, 3, 2 ** 40 + 1])
def test_fills_match_cpu(seed, start):
    stream = make_stream("gaussian", 7, 1)
    n = 10007
    w_cpu = np.empty(n, np.uint32)
    _cpu.fill_words(seed, stream, start, w_cpu)
    w_gpu = cupy.empty(n, cupy.uint32)
    _cuda.fill_words(seed, stream, start, w_gpu)
    np.testing.assert_array_equal(cupy.asnumpy(w_gpu), w_cpu)
    for dt in (np.float32, np.float64):
        for fill, extra in ((_cpu.fill_uniform, ()), (_cpu.fill_sign, (0.125,))):
            c = np.empty(n, dt)
            fill(seed, stream, start, c, *extra)
            g = cupy.empty(n, dt)
            getattr(_cuda, fill.__name__)(seed, stream, start, g, *extra)
            np.testing.assert_array_equal(cupy.asnumpy(g), c)
        c = np.empty(n, dt)
        _cpu.fill_gaussian(seed, stream, start, c, 0.5)
        g = cupy.empty(n, dt)
        _cuda.fill_gaussian(seed, stream, start, g, 0.5)
        g = cupy.asnumpy(g)
        # Contract: within 4 float32 ulps (the kernels repeat the CPU's float32 sequence).
        assert ulp_diff32(g.astype(np.float32), c.astype(np.float32)).max() <= 4
        assert np.abs(g - c).max() <= 4 * 2.0 ** -23 * np.abs(c).max()


@pytest.mark.parametrize("kind", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [(3, 70, 11, 400), (0, 1, 0, 1), (5, 6, 514, 517),
                                   (0, 200, 1, 2), (60, 70000, 2, 5)])
def test_dense_block_matches_cpu(kind, dtype, block):
    """A thread writes the entries of one Philox block: rows whose entries start anywhere in
    a block (m = 517), single entries, and more rows than the grid has (a stride loop)."""
    seed, stream, m = 99, make_stream("sign", 0, 0), 517
    args = (kind, seed, stream, m) + block + (1 / np.sqrt(67), dtype)
    c = _cpu.dense_block(*args)
    g = cupy.asnumpy(_cuda.dense_block(*args))
    assert g.dtype == c.dtype and g.shape == c.shape
    if kind == 1:
        np.testing.assert_array_equal(g, c)      # sign: bit-identical
    else:
        assert ulp_diff32(g.astype(np.float32), c.astype(np.float32)).max() <= 4


@pytest.mark.parametrize("d,nnz", [(1, 1), (64, 1), (100, 8), (5000, 3)])
def test_sparse_indices_match_cpu(d, nnz):
    stream = make_stream("sparse_sign", 0, 0)
    rc, sc = _cpu.sparse_sign_indices(d, nnz, 5, stream, 17, 3000)
    rg, sg = _cuda.sparse_sign_indices(d, nnz, 5, stream, 17, 3000)
    np.testing.assert_array_equal(cupy.asnumpy(rg), rc)
    np.testing.assert_array_equal(cupy.asnumpy(sg), sc)


def _record_launches(monkeypatch, module):
    """The kernel names ``module``'s launches take from now on (the launches still run)."""
    calls = []
    launch = module.launch
    monkeypatch.setattr(module, "launch", lambda expr, *a, **k: (calls.append(expr),
                                                                launch(expr, *a, **k)))
    return calls


def _sparse_dense_cpu(d, m, nnz, seed, stream, dtype):
    rows, signs = _cpu.sparse_sign_indices(d, nnz, seed, stream, 0, m)
    S = np.zeros((d, m), dtype)
    cols = np.repeat(np.arange(m), nnz)
    S[rows.ravel(), cols] = (signs.ravel() * (1 / np.sqrt(nnz))).astype(dtype)
    return S


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_dense_matches_cpu(dtype):
    stream = make_stream("sparse_sign", 0, 0)
    for d, m, nnz in [(32, 1000, 4), (7, 50, 1)]:
        S_gpu = cupy.asnumpy(_cuda.sparse_sign_dense(d, m, nnz, 3, stream, dtype))
        np.testing.assert_array_equal(S_gpu, _sparse_dense_cpu(d, m, nnz, 3, stream, dtype))


# (d, m, n, nnz): smem path with ragged tiles, many-row chunks, and the global-atomic path
# (d too large for a shared-memory tile); float64 reductions with odd and even n.
SPARSE_SHAPES = [(16, 1, 1, 1), (64, 1000, 37, 1), (300, 4099, 5, 8), (1024, 20000, 256, 1),
                 (60000, 300, 7, 2), (50, 3000, 132, 40), (1024, 70001, 256, 8),
                 (4096, 30000, 100, 8), (16, 5000, 33, 8), (200, 777, 12, 5),
                 (97, 2001, 36, 2), (640, 9000, 64, 3), (33, 130, 4, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d,m,n,nnz", SPARSE_SHAPES)
def test_sparse_apply(dtype, d, m, n, nnz):
    rng = np.random.default_rng(d + m + n)
    stream = make_stream("sparse_sign", 0, 0)
    seed = 2024
    S = _sparse_dense_cpu(d, m, nnz, seed, stream, np.float64)
    count = (S != 0).sum(axis=1)
    A = rng.standard_normal((m, n)).astype(dtype)
    ref = S @ A.astype(np.float64)
    bound = (gamma(count.max() + 1, dtype) * (np.abs(S) @ np.abs(A.astype(np.float64)))
             + 1e-300)
    for method in ("smem", "red", "owned", "slots"):   # every left kernel (n % 4 == 0: not smem)
        Yi = _cuda.sparse_sign_left(cupy.asarray(A), d, nnz, seed, stream, method=method)
        assert Yi.dtype == dtype and Yi.shape == (d, n)
        assert_within(cupy.asnumpy(Yi), ref, bound, f"sparse_sign_left {method}")
    Y = _cuda.sparse_sign_left(cupy.asarray(A), d, nnz, seed, stream)
    At = np.ascontiguousarray(A.T)
    for method in ("rows", "transpose"):
        Z = _cuda.sparse_sign_right(cupy.asarray(At), d, nnz, seed, stream, method=method)
        assert Z.shape == (n, d) and Z.dtype == dtype
        assert_within(cupy.asnumpy(Z), ref.T, bound.T, f"sparse_sign_right {method}")
    # Same inputs as the CPU kernel give the same function (up to summation order).
    cpu = _cpu.sparse_sign_left(A, d, nnz, seed, stream)
    assert_within(cupy.asnumpy(Y), cpu, 2 * bound, "sparse_sign_left vs CPU")


@pytest.mark.parametrize("vector", [1, 2])
def test_sparse_apply_owned_slabs_and_vectors(monkeypatch, vector):
    """The "owned" kernel with either column width per thread, over several row slabs
    (each with its own hash buffer fill), against the float64 product."""
    from sketchcore._cuda import _sparse
    monkeypatch.setattr(_sparse, "OWNED_VECTOR", vector)
    monkeypatch.setattr(_sparse, "_OWN_SLAB", 3 * 64)
    stream = make_stream("sparse_sign", 0, 0)
    d, m, n, nnz = 256, 1000, 72, 8
    A = np.random.default_rng(5).standard_normal((m, n)).astype(np.float32)
    S = _sparse_dense_cpu(d, m, nnz, 77, stream, np.float64)
    ref = S @ A.astype(np.float64)
    bound = gamma((S != 0).sum(axis=1).max() + 1, np.float32) * (np.abs(S) @ np.abs(A))
    Y = _cuda.sparse_sign_left(cupy.asarray(A), d, nnz, 77, stream, method="owned")
    assert_within(cupy.asnumpy(Y), ref, bound, f"owned, vector={vector}")


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("d,m,n,nnz,plan", [
    (512, 5000, 96, 8, (240, 4)),    # 3.75 entries per row of Y and chunk: some overflow
    (64, 4000, 32, 8, (240, 4)),     # 30 per row: full slots, most entries overflow
    (2048, 5000, 64, 8, (384, 4)),   # one group: chunks too long for byte offsets (halved)
    (1024, 6000, 64, 8, (240, 2)),   # four places a slot, some overflow
    (2500, 7000, 40, 3, None),       # several blocks of rows of Y, the last one partial
    (64, 3001, 36, 8, None),         # few warps per block, a ragged last chunk
    (200, 4000, 100, 5, None),       # a ragged last column tile (100 = 64 + 36, 6 x 16 + 4)
])
def test_sparse_apply_slots_slabs_and_overflow(monkeypatch, groups, d, m, n, nnz, plan):
    """The "slots" kernel, one and four lane groups per warp, over several slabs of slot
    tables, with blocks of rows of Y, overflow entries (more rows of A hitting one row of Y
    in a chunk than its slot has places), ragged column tiles and tiny d, against the
    float64 product."""
    from sketchcore._cuda import _sparse
    monkeypatch.setattr(_sparse, "_SLOT_SLAB", 2048)
    monkeypatch.setattr(_sparse, "SLOTS_MIN_D", 1)
    monkeypatch.setattr(_sparse, "SLOT_GROUPS", groups)
    if plan is not None:
        monkeypatch.setattr(_sparse, "_slot_plan", lambda *args: plan)
    stream = make_stream("sparse_sign", 0, 0)
    A = np.random.default_rng(d + m).standard_normal((m, n)).astype(np.float32)
    S = _sparse_dense_cpu(d, m, nnz, 78, stream, np.float64)
    ref = S @ A.astype(np.float64)
    bound = gamma((S != 0).sum(axis=1).max() + 1, np.float32) * (np.abs(S) @ np.abs(A))
    Y = _cuda.sparse_sign_left(cupy.asarray(A), d, nnz, 78, stream, method="slots")
    assert_within(cupy.asnumpy(Y), ref, bound, f"slots d={d} nnz={nnz}")


@pytest.mark.parametrize("d,m,n,nnz,plan", [
    (512, 5000, 96, 8, (240, 4)),    # 3.75 entries per row of Y and chunk: some overflow
    (64, 4000, 32, 8, (240, 4)),     # 30 per row: full slots, most entries overflow
    (1024, 5000, 64, 8, (384, 4)),   # chunks too long for byte offsets (halved), 2 blocks
    (1024, 6000, 64, 8, (240, 2)),   # four places a slot, some overflow
    (2500, 7000, 40, 3, None),       # several blocks of rows of Y, the last one partial
    (200, 4000, 100, 5, None),       # a ragged last column tile (100 = 3 x 32 + 4)
])
def test_sparse_apply_slots_float64(monkeypatch, d, m, n, nnz, plan):
    """The "slots" kernel in float64 (a double a lane, 16 rows of Y a thread, 256-byte
    staged rows), over several slabs, with overflow entries, halved offsets and ragged
    tiles, against the float64 product with float64's error bound."""
    from sketchcore._cuda import _sparse
    monkeypatch.setattr(_sparse, "_SLOT_SLAB", 2048)
    monkeypatch.setattr(_sparse, "SLOTS_MIN_D", 1)
    if plan is not None:
        monkeypatch.setattr(_sparse, "_slot_plan", lambda *args: plan)
    stream = make_stream("sparse_sign", 0, 0)
    A = np.random.default_rng(d + m + 1).standard_normal((m, n))
    S = _sparse_dense_cpu(d, m, nnz, 82, stream, np.float64)
    ref = S @ A
    bound = gamma((S != 0).sum(axis=1).max() + 1, np.float64) * (np.abs(S) @ np.abs(A))
    calls = _record_launches(monkeypatch, _sparse)
    Y = _cuda.sparse_sign_left(cupy.asarray(A), d, nnz, 82, stream, method="slots")
    assert any(c.endswith(", double>") for c in calls), calls      # the float64 kernel ran
    assert_within(cupy.asnumpy(Y), ref, bound, f"slots float64 d={d} nnz={nnz}")


@pytest.mark.parametrize("d,m,n,R", [
    (2048, 8000, 48, 1100),   # about 4 entries per row of Y and chunk, one block of rows
    (4096, 9000, 32, 1280),   # two blocks of rows of Y, about 2.5 entries a row
    (256, 5000, 40, 1200),    # about 37: full slots, most entries overflow
])
def test_sparse_apply_slots_lane_groups_long_chunks(monkeypatch, d, m, n, R):
    """Four lane groups per warp with chunks too long for byte offsets (shift 1: 64-byte
    staged rows, R > 1022), against the float64 product."""
    from sketchcore._cuda import _sparse
    monkeypatch.setattr(_sparse, "SLOT_GROUPS", 4)
    monkeypatch.setattr(_sparse, "_slot_plan", lambda *args: (R, 4))
    assert _sparse._slot_shift(R, 4) == 1
    calls = _record_launches(monkeypatch, _sparse)
    stream = make_stream("sparse_sign", 0, 0)
    A = np.random.default_rng(d + m).standard_normal((m, n)).astype(np.float32)
    S = _sparse_dense_cpu(d, m, 8, 79, stream, np.float64)
    ref = S @ A.astype(np.float64)
    bound = gamma((S != 0).sum(axis=1).max() + 1, np.float32) * (np.abs(S) @ np.abs(A))
    Y = _cuda.sparse_sign_left(cupy.asarray(A), d, 8, 79, stream, method="slots")
    assert "sc_sparse_apply_slots<4, 1, 4, float>" in calls, calls
    assert_within(cupy.asnumpy(Y), ref, bound, f"slots, four groups, d={d}, R={R}")


def _decode_slots(SL, OV, layout, groups, chunks):
    """Read slot tables as sc_sparse_apply_slots does: {(chunk, row of Y): sorted list of
    (row of the chunk, sign)} from the slot words (in order, up to the first empty one;
    bit 0 the low place's sign, bit 1 the high's) and the overflow lists, plus every place
    read as (chunk, row of Y, word, half, row of the chunk), zero rows included."""
    from sketchcore._cuda import _sparse
    tbw, ntb, R, H, ovstride, _ = layout
    row_bytes = _sparse._slot_row_bytes(groups)
    shift = _sparse._slot_shift(R, groups)
    words = cupy.asnumpy(SL).reshape(chunks, ntb, tbw, H).astype(np.int64)
    ovs = cupy.asnumpy(OV).astype(np.int64)
    empty = ((R * row_bytes) >> (2 * shift)) | (((R * row_bytes) >> shift) << 16)
    entries, reads = {}, []
    for c in range(chunks):
        for tb in range(ntb):
            for i in range(tbw):
                # Row i = 64 w + K g + k (K = 64 / groups rows a lane group) is stored at
                # 64 w + groups k + g.
                g, k = divmod(i % 64, 64 // groups)
                at = i if groups == 1 else i - i % 64 + groups * k + g
                w = words[c, tb, at]
                got = []
                for j in range(H):
                    if w[j] == empty:
                        break       # the kernel skips it and every later word
                    lo = ((w[j] & 0x7ffc) << 2) if shift else (w[j] & 0xfffc)
                    hi = w[j] >> (16 - shift)
                    assert lo % row_bytes == 0 and hi % row_bytes == 0, (c, tb, i, j)
                    for half, off in enumerate((lo, hi)):
                        r = off // row_bytes
                        reads.append((c, tb * tbw + i, j, half, r))
                        assert r <= R + 1, (c, tb, i, j, r)
                        if r < R:
                            got.append((r, -1 if w[j] >> half & 1 else 1))
                entries[c, tb * tbw + i] = got
            ov = ovs[(c * ntb + tb) * ovstride:]
            for u in ov[1:1 + ov[0]]:
                entries[c, tb * tbw + (u & 0x7ff)].append((u >> 12, -1 if u >> 11 & 1 else 1))
    return {key: sorted(v) for key, v in entries.items()}, reads


@pytest.mark.parametrize("groups,d,R,H", [
    (1, 256, 120, 4), (1, 1024, 300, 2), (1, 64, 240, 4), (4, 4096, 1280, 4),
    (4, 2048, 480, 4), (4, 2048, 1100, 4), (4, 4096, 700, 2), (4, 64, 480, 4),
])
def test_slot_tables_hold_every_entry_once(groups, d, R, H):
    """sc_sparse_slots' tables, read back as the apply kernel reads them, hold every
    nonzero of S (row of Y, row of the chunk, sign) exactly once, in a slot place or the
    overflow list; zero places name one of the two zero rows (R, R + 1); and with lane
    groups a zero place read in the same load as an entry of its partner group's row (rows
    i and i ^ K, K = 64 / groups rows a group) lies in the other bank half (the other
    parity of 64-byte rows)."""
    from sketchcore._cuda import _sparse
    m, nnz, seed = 3 * R - 17, 8, 81
    stream = make_stream("sparse_sign", 0, 0)
    layout = _sparse._slot_layout(m, d, nnz, 227 * 1024, groups)
    tbw, ntb = layout[:2]
    layout = (tbw, ntb, R, H) + layout[4:]
    bands = max((min(d, t0 + tbw) * nnz - 1) // d - ((t0 + 1) * nnz - 1) // d + 1
                for t0 in range(0, d, tbw))
    ovstride = -(-(1 + R * bands) // 4) * 4
    layout = layout[:4] + (ovstride, layout[5])
    chunks = -(-m // R)
    SL = cupy.full(chunks * ntb * tbw * H, 0xdeadbeef, dtype=cupy.uint32)
    OV = cupy.zeros(chunks * ntb * ovstride + _sparse._SLOT_OVS, dtype=cupy.uint32)
    _sparse._build_slots(0, m, d, nnz, seed, stream, layout, groups, SL, OV)
    got, reads = _decode_slots(SL, OV, layout, groups, chunks)
    S = _sparse_dense_cpu(d, m, nnz, seed, stream, np.float64)
    for c in range(chunks):
        block = S[:, c * R:(c + 1) * R]
        for row in range(d):
            cols = np.flatnonzero(block[row])
            want = sorted((int(r), 1 if block[row, r] > 0 else -1) for r in cols)
            assert got[c, row] == want, (c, row)
    if groups > 1:
        at = {(c, y, k, half): r for c, y, k, half, r in reads}
        spread = 0
        for (c, y, k, half), r in at.items():
            other = at.get((c, y ^ (64 // groups), k, half))
            spread += r == R + 1
            if r >= R and other is not None and other < R:
                assert (r - other) % 2 == 1, (c, y, k, half, r, other)
        assert spread or R * nnz >= 8 * d, "no zero place moved to the second zero row"


def test_sparse_apply_right_slabs(monkeypatch):
    """The right apply's kernel over several slabs of S's columns (each with its own hash
    buffer fill), a ragged last row block (n = 13: 8 + 5 rows) and column slabs that split
    the columns among blocks, against the float64 product."""
    from sketchcore._cuda import _sparse
    monkeypatch.setattr(_sparse, "_RIGHT_SLAB", 3000)
    calls = _record_launches(monkeypatch, _sparse)
    stream = make_stream("sparse_sign", 0, 0)
    d, m, n, nnz = 300, 20000, 13, 4
    A = np.random.default_rng(9).standard_normal((n, m)).astype(np.float32)
    S = _sparse_dense_cpu(d, m, nnz, 83, stream, np.float64)
    ref = A.astype(np.float64) @ S.T
    bound = gamma((S != 0).sum(axis=1).max() + 1, np.float32) * (np.abs(A) @ np.abs(S.T))
    Z = _cuda.sparse_sign_right(cupy.asarray(A), d, nnz, 83, stream, method="rows")
    assert calls.count("sc_sparse_apply_right<float>") == -(-m // (3000 // nnz))
    assert_within(cupy.asnumpy(Z), ref, bound, "sparse_sign_right, slabs")


@pytest.mark.parametrize("method", ["slabs", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,name", [(0, "gaussian"), (1, "sign")])
@pytest.mark.parametrize("d,m,n", [(1, 1, 1), (20, 300, 7), (70, 129, 65), (8, 5000, 3)])
def test_dense_apply(method, dtype, kind, name, d, m, n):
    rng = np.random.default_rng(m * n + d)
    seed, stream = 77, make_stream(name, 0, 0)
    S = _cpu.dense_block(kind, seed, stream, m, 0, d, 0, m, 1 / np.sqrt(d), np.float64)
    A = rng.standard_normal((m, n)).astype(dtype)
    A64 = A.astype(np.float64)
    ref = S @ A64
    # Entries are rounded to dtype (one rounding) then m-term sums: gamma_{m+1}.
    bound = gamma(m + 2, dtype) * (np.abs(S) @ np.abs(A64)) + 1e-300
    Y = getattr(_cuda, f"{name}_left")(cupy.asarray(A), d, seed, stream, method=method)
    assert Y.dtype == dtype and Y.shape == (d, n)
    assert_within(cupy.asnumpy(Y), ref, bound, f"{name}_left")
    At = np.ascontiguousarray(A.T)
    Z = getattr(_cuda, f"{name}_right")(cupy.asarray(At), d, seed, stream, method=method)
    assert Z.shape == (n, d)
    assert_within(cupy.asnumpy(Z), ref.T, bound.T, f"{name}_right")
    cpu = getattr(_cpu, f"{name}_left")(A, d, seed, stream)
    assert_within(cupy.asnumpy(Y), cpu, 2 * bound, f"{name}_left vs CPU")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,name", [(0, "gaussian"), (1, "sign")])
def test_dense_apply_in_slabs(monkeypatch, dtype, kind, name):
    """Several slabs of S (a small workspace): each generated once, each added by cuBLAS on
    top of the previous ones; m = 1001 puts Philox blocks across rows and slab edges."""
    from sketchcore._cuda import _dense
    d, m, n = 96, 1001, 40
    monkeypatch.setattr(_dense, "SLAB_BYTES", d * 128 * np.dtype(dtype).itemsize)
    calls = _record_launches(monkeypatch, _dense)
    rng = np.random.default_rng(5)
    seed, stream = 61, make_stream(name, 0, 0)
    S = _cpu.dense_block(kind, seed, stream, m, 0, d, 0, m, 1 / np.sqrt(d), np.float64)
    A = rng.standard_normal((m, n)).astype(dtype)
    ref = S @ A.astype(np.float64)
    bound = gamma(m + 2, dtype) * (np.abs(S) @ np.abs(A.astype(np.float64))) + 1e-300
    Y = getattr(_cuda, f"{name}_left")(cupy.asarray(A), d, seed, stream, method="slabs")
    assert calls == [f"sc_dense_block<{'float' if dtype == np.float32 else 'double'}>"] * 8
    assert_within(cupy.asnumpy(Y), ref, bound, f"{name}_left in slabs")
    Z = getattr(_cuda, f"{name}_right")(cupy.asarray(np.ascontiguousarray(A.T)), d, seed,
                                       stream, method="slabs")
    assert len(calls) == 16
    assert_within(cupy.asnumpy(Z), ref.T, bound.T, f"{name}_right in slabs")


@pytest.mark.parametrize("m,n,fused", [(1000, 64, True), (1000, 65, False), (1001, 8, False)])
def test_dense_apply_default_method(monkeypatch, m, n, fused):
    """The default fuses generation into the product for narrow A whose operator rows are a
    multiple of 4 long (four entries per Philox block there), else products slab by slab."""
    from sketchcore._cuda import _dense, _gemm
    dense_calls = _record_launches(monkeypatch, _dense)
    gemm_calls = _record_launches(monkeypatch, _gemm)
    A = cupy.ones((m, n), dtype=cupy.float32)
    _cuda.gaussian_left(A, 16, 1, 0)
    _cuda.gaussian_right(cupy.ascontiguousarray(A.T), 16, 1, 0)
    assert bool(gemm_calls) == fused and bool(dense_calls) == (not fused)


def test_dense_apply_refuses_an_unknown_method():
    A = cupy.ones((10, 3), dtype=cupy.float32)
    with pytest.raises(ValueError, match="method must be one of"):
        _cuda.gaussian_left(A, 4, 1, 0, method="tiles")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p,n", [(1, 3), (2, 1), (8, 3), (16, 9), (64, 33), (512, 70),
                                 (1024, 16), (2048, 3), (4096, 5), (2 ** 15, 2),
                                 (2 ** 20, 17)])
def test_fwht_rows(dtype, p, n):
    rng = np.random.default_rng(p + n)
    X = rng.standard_normal((p, n)).astype(dtype)
    H = scipy.linalg.hadamard(p, dtype=np.float64) if p <= 4096 else None
    Xg = cupy.asarray(X)
    out = _cuda.fwht_rows(Xg)
    assert out is Xg
    got = cupy.asnumpy(Xg)
    if H is not None:
        ref = H @ X.astype(np.float64)
        absref = np.abs(H) @ np.abs(X.astype(np.float64))
    else:   # large p: transform the float64 copy with the (tested) small-p recursion
        ref = X.astype(np.float64).copy()
        h = 1
        while h < p:
            ref = ref.reshape(p // (2 * h), 2, h, n)
            ref = np.stack([ref[:, 0] + ref[:, 1], ref[:, 0] - ref[:, 1]], axis=1).reshape(p, n)
            h *= 2
        absref = np.abs(X.astype(np.float64)).sum(axis=0, keepdims=True).repeat(p, 0)
    bound = gamma(max(p.bit_length() - 1, 1), dtype) * absref + 1e-300
    assert_within(got, ref, bound, "fwht_rows")


def test_fwht_rejects_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        _cuda.fwht_rows(cupy.zeros((12, 3), cupy.float32))
    with pytest.raises(TypeError):
        _cuda.fwht_rows(cupy.zeros((8, 3), cupy.float32)[:, ::2])


@pytest.mark.parametrize("M,N,K,split_hint", [(1, 1, 1, 0), (65, 70, 33, 0), (3, 40, 20000, 1),
                                              (130, 17, 5000, 1), (1000, 1000, 64, 0)])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_shapes_and_strides(M, N, K, split_hint, trans):
    from sketchcore._cuda._gemm import Operand, gemm
    rng = np.random.default_rng(M * N + K)
    A = rng.standard_normal((M, K))
    B = rng.standard_normal((K, N))
    As = np.ascontiguousarray(A.T) if trans[0] else A
    Bs = np.ascontiguousarray(B.T) if trans[1] else B
    for dt, ct in ((np.float32, "float"), (np.float64, "double")):
        Ag, Bg = cupy.asarray(As.astype(dt)), cupy.asarray(Bs.astype(dt))
        a = Operand(Ag, ct, 1, M) if trans[0] else Operand(Ag, ct, K, 1)
        b = Operand(Bg, ct, 1, K) if trans[1] else Operand(Bg, ct, N, 1)
        out = cupy.full((M, N), np.nan, dtype=dt)
        bias = cupy.asarray(rng.standard_normal(N).astype(dt))
        gemm(M, N, K, a, b, out, ct, ct, alpha=0.5, bias=bias)
        A64, B64 = A.astype(dt).astype(np.float64), B.astype(dt).astype(np.float64)
        ref = 0.5 * A64 @ B64 + cupy.asnumpy(bias)
        bound = gamma(K + 3, dt) * (0.5 * np.abs(A64) @ np.abs(B64) + np.abs(cupy.asnumpy(bias)))
        assert_within(cupy.asnumpy(out), ref, bound + 1e-300, f"gemm {dt.__name__} {trans}")


def _srht_rows(d, m, seed):
    p = 1 << max(m - 1, 0).bit_length()
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(p, size=d, replace=False)).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d,m,n", [(1, 1, 1), (3, 5, 4), (5, 37, 9), (64, 1000, 33),
                                   (100, 4097, 3), (20, 3000, 300), (200, 3000, 2)])
def test_srht_matches_cpu(dtype, d, m, n):
    stream = make_stream("srht", 0, 0)
    rows = _srht_rows(d, m, m)
    # The operator itself (applied to the identity) is bit-identical: every entry is
    # +-1 * dtype(1/sqrt(d)) exactly on both sides.
    eye = np.eye(m, dtype=dtype)
    S_cpu = _cpu.srht_left(eye, rows, 11, stream)
    S_gpu = cupy.asnumpy(_cuda.srht_left(cupy.asarray(eye), cupy.asarray(rows), 11, stream))
    np.testing.assert_array_equal(S_gpu, S_cpu)
    rng = np.random.default_rng(d * m)
    A = rng.standard_normal((m, n)).astype(dtype)
    S64 = S_cpu.astype(np.float64)
    ref = S64 @ A.astype(np.float64)
    p = 1 << max(m - 1, 0).bit_length()
    # log2(p) butterfly levels, then one scaling by the rounded dtype(1/sqrt(d)).
    bound = gamma(p.bit_length() + 3, dtype) * (np.abs(S64) @ np.abs(A.astype(np.float64))) \
        + 1e-300
    got = cupy.asnumpy(_cuda.srht_left(cupy.asarray(A), rows, 11, stream))
    assert_within(got, ref, bound, "srht_left")
    Z = cupy.asnumpy(_cuda.srht_right(cupy.asarray(np.ascontiguousarray(A.T)), rows, 11, stream))
    assert_within(Z, ref.T, bound.T, "srht_right")
    with pytest.raises(ValueError, match="rows must lie"):
        _cuda.srht_left(cupy.asarray(A), np.array([p], dtype=np.int64), 11, stream)


def test_kernels_run_on_the_current_stream():
    """Launches go to CuPy's current stream: on a non-blocking stream, a kernel queued after
    a long producer on that stream sees the producer's result (no stray default-stream
    launches, no device-wide synchronisation needed)."""
    stream = make_stream("sparse_sign", 0, 0)
    A = cupy.random.default_rng(0).standard_normal((200_000, 64), dtype=cupy.float32)
    ref = cupy.asnumpy(_cuda.sparse_sign_left(A, 256, 4, 9, stream))
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        B = cupy.empty_like(A)
        for _ in range(5):               # a busy producer on the same stream
            cupy.multiply(A, 1.0, out=B)
        Y = _cuda.sparse_sign_left(B, 256, 4, 9, stream)
        Z = _cuda.gaussian_left(B[:4000], 16, 9, make_stream("gaussian", 0, 0))
    s.synchronize()
    # Both results sum the same terms in an order set by atomics: they differ by rounding
    # only, at most twice the worst-case float32 summation error of either.
    S = _cuda.sparse_sign_dense(256, A.shape[0], 4, 9, stream, np.float64)
    count = int((S != 0).sum(axis=1).max())
    bound = 2 * gamma(count + 1, np.float32) * cupy.asnumpy(cupy.abs(S) @ cupy.abs(A).astype(
        cupy.float64))
    assert_within(cupy.asnumpy(Y), ref, bound + 1e-30, "sparse apply on a side stream")
    Zref = _cuda.gaussian_left(A[:4000], 16, 9, make_stream("gaussian", 0, 0))
    G = _cuda.dense_block(0, 9, make_stream("gaussian", 0, 0), 4000, 0, 16, 0, 4000, 0.25,
                          np.float64)
    zb = 2 * gamma(4002, np.float32) * cupy.asnumpy(cupy.abs(G) @ cupy.abs(
        A[:4000]).astype(cupy.float64))
    assert_within(cupy.asnumpy(Z), cupy.asnumpy(Zref), zb + 1e-30, "gaussian on a side stream")
