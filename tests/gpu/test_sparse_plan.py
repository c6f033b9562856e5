"""Geometry of the "slots" SparseSign kernel (sketchcore._cuda._sparse), checked without a
GPU: chunk lengths whose byte offsets fit a slot's 16 bits, shared memory within the
device's limit, slot tables within their memory budget."""
import pytest

from sketchcore._cuda import _sparse


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("optin", [227 * 1024, 99 * 1024])
@pytest.mark.parametrize("d", [64, 1000, 1024, 2048, 4096, 65536, (1 << 21) - 1])
@pytest.mark.parametrize("nnz", [2, 8, 32])
@pytest.mark.parametrize("m", [1, 4097, 1_000_000])
def test_slot_layout_fits_offsets_shared_memory_and_budget(groups, optin, d, nnz, m):
    tbw, ntb, R, H, ovstride, slab = _sparse._slot_layout(m, d, nnz, optin, groups)
    threads = 2 * tbw // groups            # a warp holds 16 groups rows of Y
    assert threads % 32 == 0 and threads <= _sparse._SLOT_THREADS and tbw <= _sparse._SLOT_TB
    assert ntb * tbw >= d > (ntb - 1) * tbw
    # A row's byte offset in the staged tile, the two zero rows' (R and R + 1) too, fits a
    # slot word's halves as sc_slot_add reads them: shift 0, 16 bits each with bits 0 and 1
    # left for the signs; shift 1, >> 2 in the low half's bits 2 .. 14 and >> 1 in the high
    # half.
    shift = _sparse._slot_shift(R, groups)
    row_bytes = _sparse._slot_row_bytes(groups)
    top = (R + 1) * row_bytes
    assert row_bytes == 256 // groups and 16 <= R and shift in (0, 1)
    assert top <= 0xfffc if shift == 0 else (top >> 2 <= 0x7ffc and top >> 1 <= 0xffff)
    assert shift == 0 or top > 0xfffc                          # bytes whenever they fit
    assert (row_bytes >> (2 * shift)) % 4 == 0                 # the sign bits stay free
    assert H in (2, 4)
    smem = _sparse._slot_smem(R, H, tbw, groups)
    assert smem == 2 * ((R + 2) * row_bytes + tbw * 4 * H + _sparse._SLOT_OVS * 4)
    assert smem <= optin and _sparse._slot_builder_smem(tbw, H) <= optin
    bands = max(((min(d, t0 + tbw)) * nnz - 1) // d - ((t0 + 1) * nnz - 1) // d + 1
                for t0 in range(0, d, tbw))
    assert ovstride % 4 == 0 and ovstride >= 1 + R * bands
    # Overflow entries hold r << 12 | minus << 11 | row of Y in the block; the builder's
    # entries r | minus << 15.
    assert R <= 1 << 11 and tbw <= 1 << 11
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
    """About 4 entries per row of Y and chunk (d = 512, nnz = 8): H = 4, R = 4 d / nnz;
    sparser chunks as long as shared memory allows. One group: 256-byte staged rows, blocks
    of 512 rows of Y. Four groups: 64-byte rows, blocks of 2048 rows, chunks four times as
    long (d = 4096: 1280 rows, 2.5 entries per row of Y, halved offsets; d = 8192: 1.25
    entries, H = 2). Tables too large for one slab are split into slabs of equal length."""
    tbw, ntb, R, H, _, slab = _sparse._slot_layout(1_000_000, 512, 8, 227 * 1024)
    assert (tbw, ntb, R, H) == (512, 1, 254, 4) and slab >= 1_000_000   # one slab of tables
    assert _sparse._slot_shift(R) == 0
    tbw, ntb, R, H, _, _ = _sparse._slot_layout(1_000_000, 1024, 8, 227 * 1024)
    assert (tbw, ntb, R, H) == (512, 2, 416, 4)
    tbw, ntb, R, H, _, _ = _sparse._slot_layout(1_000_000, 2048, 8, 227 * 1024, 4)
    assert (tbw, ntb, R, H) == (2048, 1, 1022, 4) and _sparse._slot_shift(R, 4) == 0
    tbw, ntb, R, H, _, slab = _sparse._slot_layout(1_000_000, 4096, 8, 227 * 1024, 4)
    assert (tbw, ntb, R, H) == (2048, 2, 1280, 4) and _sparse._slot_shift(R, 4) == 1
    assert slab >= 1_000_000
    assert _sparse._slot_layout(1_000_000, 8192, 8, 227 * 1024, 4)[2:4] == (1280, 2)
    slab = _sparse._slot_layout(1_000_000, 16384, 8, 227 * 1024, 4)[5]
    assert 500_000 <= slab < 500_000 + 1280


def test_small_d_shares_a_multiprocessor():
    """A block holds tbw = d rows of Y (d / 16 warps): for d below 512 several blocks share
    a multiprocessor, as many as registers and shared memory allow."""
    def blocks(d):
        tbw, _, R, H, _, _ = _sparse._slot_layout(1_000_000, d, 8, 227 * 1024)
        return _sparse._slot_blocks_per_sm(2 * tbw, _sparse._slot_smem(R, H, tbw), 227 * 1024)
    assert [blocks(d) for d in (128, 256, 512, 1024)] == [4, 2, 1, 1]


@pytest.mark.parametrize("groups,want", [(None, None), (1, 1), (4, 4)])
@pytest.mark.parametrize("d", [256, 1024, 1025, 4096])
def test_slot_groups_default_and_override(monkeypatch, groups, want, d):
    """SLOT_GROUPS picks the lane groups where set; unset, one group up to d = 1024 rows
    of Y, four beyond."""
    monkeypatch.setattr(_sparse, "SLOT_GROUPS", groups)
    assert _sparse._slot_groups(d) == (want or (1 if d <= 1024 else 4))


@pytest.mark.parametrize("groups", [2, 3, 8, 0])
def test_slot_groups_rejects_others(monkeypatch, groups):
    monkeypatch.setattr(_sparse, "SLOT_GROUPS", groups)
    with pytest.raises(ValueError, match=rf"SLOT_GROUPS must be 1, 4 or None, got {groups}"):
        _sparse._slot_groups(4096)
