"""Geometry of the "slots" SparseSign kernel (sketchcore._cuda._sparse), checked without a
GPU: chunk lengths whose byte offsets fit a slot's 16 bits, shared memory within the
device's limit, slot tables within their memory budget."""
import pytest

from sketchcore._cuda import _sparse


@pytest.mark.parametrize("optin", [227 * 1024, 99 * 1024])
@pytest.mark.parametrize("d", [64, 1000, 1024, 2048, 4096, 65536, (1 << 21) - 1])
@pytest.mark.parametrize("nnz", [2, 8, 32])
@pytest.mark.parametrize("m", [1, 4097, 1_000_000])
def test_slot_layout_fits_offsets_shared_memory_and_budget(optin, d, nnz, m):
    tbw, ntb, R, H, ovstride, slab = _sparse._slot_layout(m, d, nnz, optin)
    assert tbw % 32 == 0 and tbw <= _sparse._SLOT_TB and ntb * tbw >= d > (ntb - 1) * tbw
    assert 16 <= R <= _sparse._SLOT_R_MAX and R * 128 < 1 << 16     # zero row's offset too
    assert H in (2, 4)
    smem = 2 * ((R + 1) * 32 * 4 + tbw * 4 * H + _sparse._SLOT_OVS * 4)
    assert smem <= optin
    bands = max(((min(d, t0 + tbw)) * nnz - 1) // d - ((t0 + 1) * nnz - 1) // d + 1
                for t0 in range(0, d, tbw))
    assert ovstride % 4 == 0 and ovstride >= 1 + R * bands
    assert slab % R == 0 and R <= slab <= max(R, -(-m // R) * R)
    chunks = slab // R
    assert chunks == 1 or 4 * chunks * ntb * (tbw * H + ovstride) <= _sparse._SLOT_BYTES
    assert slab <= max(R, _sparse._SLOT_SLAB)


def test_dense_chunks_take_four_places_per_sign():
    """About 4 entries per row of Y and chunk (d = 1024, nnz = 8): H = 4, R just under the
    16-bit offset limit; sparse chunks (d = 4096): H = 2."""
    _, _, R, H, _, slab = _sparse._slot_layout(1_000_000, 1024, 8, 227 * 1024)
    assert (R, H) == (511, 4) and slab >= 1_000_000        # one slab of tables
    assert _sparse._slot_layout(1_000_000, 4096, 8, 227 * 1024)[3] == 2
