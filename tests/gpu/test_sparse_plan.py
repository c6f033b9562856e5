"""Geometry of the "slots" SparseSign kernel (sketchcore._cuda._sparse), checked without a
GPU: chunk lengths whose byte offsets fit a slot's 16 bits, shared memory within the
device's limit, slot tables within their memory budget."""
import pytest

from sketchcore._cuda import _sparse


@pytest.mark.parametrize("vector,groups", [(1, 1), (2, 1), (1, 2), (2, 4)])
@pytest.mark.parametrize("optin", [227 * 1024, 99 * 1024])
@pytest.mark.parametrize("d", [64, 1000, 1024, 2048, 4096, 65536, (1 << 21) - 1])
@pytest.mark.parametrize("nnz", [2, 8, 32])
@pytest.mark.parametrize("m", [1, 4097, 1_000_000])
def test_slot_layout_fits_offsets_shared_memory_and_budget(vector, groups, optin, d, nnz, m):
    tbw, ntb, R, H, ovstride, slab = _sparse._slot_layout(m, d, nnz, optin, vector, groups)
    threads = vector * tbw // groups       # a warp holds 32 groups / vector rows of Y
    assert threads % 32 == 0 and threads <= _sparse._SLOT_THREADS and tbw <= _sparse._SLOT_TB
    assert ntb * tbw >= d > (ntb - 1) * tbw
    # A row's byte offset in the staged tile, the two zero rows' (R and R + 1) too, fits a
    # slot word's halves as sc_slot_pair reads them: shift 0, 16 bits each with bit 0 left
    # for a sign; shift 1, >> 2 in the low half's bits 1 .. 14 and >> 1 in the high half.
    shift = _sparse._slot_shift(R, vector, groups)
    top = (R + 1) * _sparse._slot_row_bytes(vector, groups)
    assert 16 <= R and shift in (0, 1)
    assert top <= 0xfffe if shift == 0 else (top >> 2 <= 0x7ffe and top >> 1 <= 0xffff)
    assert shift == 0 or top > 0xfffe                          # bytes whenever they fit
    assert H in (2, 4)
    smem = _sparse._slot_smem(R, H, tbw, vector, groups)
    assert smem == 2 * ((R + 2) * 128 * vector // groups + tbw * 4 * H
                        + _sparse._SLOT_OVS * 4)
    assert smem <= optin
    assert _sparse._slot_builder_smem(tbw, H, _sparse._slot_signed(vector)) <= optin
    bands = max(((min(d, t0 + tbw)) * nnz - 1) // d - ((t0 + 1) * nnz - 1) // d + 1
                for t0 in range(0, d, tbw))
    assert ovstride % 4 == 0 and ovstride >= 1 + R * bands
    # Overflow entries hold r << 12 | minus << 11 | row of Y in the block.
    assert R <= 1 << 20 and tbw <= 1 << 11
    assert slab % R == 0 and R <= slab <= max(R, -(-m // R) * R)
    chunks = slab // R
    assert chunks == 1 or 4 * chunks * ntb * (tbw * H + ovstride) <= _sparse._SLOT_BYTES
    assert slab <= max(R, _sparse._SLOT_SLAB)
    # Blocks per multiprocessor: within the register file (64 registers a thread, 1024
    # threads) and shared memory (each block reserving 1 KiB more).
    blocks = _sparse._slot_blocks_per_sm(threads, smem, optin)
    assert blocks >= 1 and blocks * threads <= _sparse._SLOT_THREADS
    assert blocks == 1 or blocks * (smem + 1024) <= optin + 1024


def test_slot_plan_follows_the_entries_per_row():
    """About 4 entries per row of Y and chunk (d = 1024, nnz = 8): H = 4, R = 4 d / nnz
    cut to the longest chunk with byte offsets (shift 0); sparser chunks as long as shared
    memory allows (d = 4096: 768 rows, 1.5 entries per row of Y, halved offsets): H = 2.
    Two columns per thread: rows of twice the bytes, chunks as long as two such tiles
    allow, blocks of half the rows of Y. Tables too large for one slab are split into
    slabs of equal length."""
    tbw, _, R, H, _, slab = _sparse._slot_layout(1_000_000, 1024, 8, 227 * 1024)
    assert (tbw, R, H) == (1024, 510, 4) and slab >= 1_000_000        # one slab of tables
    assert _sparse._slot_shift(R, 1) == 0
    R, H = _sparse._slot_layout(1_000_000, 4096, 8, 227 * 1024)[2:4]
    assert (R, H) == (768, 2) and _sparse._slot_shift(R, 1) == 1
    tbw, ntb, R, H, _, _ = _sparse._slot_layout(1_000_000, 1024, 8, 227 * 1024, 2)
    assert (tbw, ntb, R, H) == (512, 2, 416, 4)
    assert _sparse._slot_layout(1_000_000, 4096, 8, 227 * 1024)[5] >= 1_000_000
    # Two lane groups: blocks of 2048 rows of Y, 64-byte staged rows, chunks twice as long.
    tbw, ntb, R, H, _, _ = _sparse._slot_layout(1_000_000, 2048, 8, 227 * 1024, 1, 2)
    assert (tbw, ntb, R, H) == (2048, 1, 1022, 4) and _sparse._slot_shift(R, 1, 2) == 0
    tbw, ntb, R, H, _, _ = _sparse._slot_layout(1_000_000, 4096, 8, 227 * 1024, 1, 2)
    assert (tbw, ntb, R, H) == (2048, 2, 1280, 4) and _sparse._slot_shift(R, 1, 2) == 1
    # Four lane groups of two columns a lane: the same blocks, rows and chunks.
    assert _sparse._slot_layout(1_000_000, 4096, 8, 227 * 1024, 2, 4)[:4] == (2048, 2, 1280, 4)
    slab = _sparse._slot_layout(1_000_000, 16384, 8, 227 * 1024)[5]
    assert 500_000 <= slab < 500_000 + 768


def test_small_d_shares_a_multiprocessor():
    """A block holds tbw = d rows of Y (d / 32 warps): for d below 1024 several blocks
    share a multiprocessor, as many as registers and shared memory allow."""
    def blocks(d, vector=1):
        tbw, _, R, H, _, _ = _sparse._slot_layout(1_000_000, d, 8, 227 * 1024, vector)
        smem = _sparse._slot_smem(R, H, tbw, vector)
        return _sparse._slot_blocks_per_sm(vector * tbw, smem, 227 * 1024)
    assert [blocks(d) for d in (128, 256, 512, 1024, 4096)] == [8, 4, 2, 1, 1]
    assert [blocks(d, 2) for d in (128, 256, 512, 1024)] == [4, 2, 1, 1]
    assert _sparse._slot_blocks_per_sm(128, 100 * 1024, 227 * 1024) == 2   # shared memory


@pytest.mark.parametrize("vector,groups,want", [
    (None, None, None), (1, None, None), (2, None, (2, 1)), (None, 4, (2, 4)), (1, 2, (1, 2)),
    (2, 4, (2, 4)), (None, 2, (1, 2)),
])
@pytest.mark.parametrize("d", [256, 1024, 4096])
def test_slot_geometry_defaults_and_overrides(monkeypatch, vector, groups, want, d):
    """SLOT_VECTOR / SLOT_GROUPS pick the geometry where set (either alone completes it);
    unset, d does: (2, 1) while one block holds every row of Y, (1, 1) up to 1024 rows,
    four lane groups of two columns beyond."""
    monkeypatch.setattr(_sparse, "SLOT_VECTOR", vector)
    monkeypatch.setattr(_sparse, "SLOT_GROUPS", groups)
    got = _sparse._slot_geometry(d)
    assert got in _sparse._SLOT_GEOMETRIES
    if want is not None:
        assert got == want
    elif vector == 1:
        assert got[0] == 1
    if vector is None and groups is None:
        assert got == {256: (2, 1), 1024: (1, 1), 4096: (2, 4)}[d]


@pytest.mark.parametrize("vector,groups", [(2, 2), (1, 4), (4, 1), (3, None)])
def test_slot_geometry_rejects_other_pairs(monkeypatch, vector, groups):
    monkeypatch.setattr(_sparse, "SLOT_VECTOR", vector)
    monkeypatch.setattr(_sparse, "SLOT_GROUPS", groups)
    with pytest.raises(ValueError, match=r"SLOT_VECTOR, SLOT_GROUPS.*got \(" + str(vector)):
        _sparse._slot_geometry(4096)
