"""Pass plan of the GPU FWHT (sketchcore._cuda._fwht), checked without a GPU: every pass
is a compiled sc_fwht_tile instantiation whose tile fits shared memory, the passes cover
every stage, and there are as few of them as the tiles allow."""
import pytest

from sketchcore._cuda import _fwht, _loader


@pytest.mark.parametrize("stages", range(_fwht.TILE_MIN_STAGES, 41))
def test_pass_plan_covers_every_stage_in_few_compiled_passes(stages):
    plan = _fwht._pass_stages(stages)
    assert sum(plan) == stages
    assert len(plan) == -(-stages // _fwht.TILE_MAX_STAGES)
    assert max(plan) - min(plan) <= 1                      # split evenly
    exprs = set(_loader.name_expressions())
    for L in plan:
        assert _fwht.TILE_MIN_STAGES <= L <= _fwht.TILE_MAX_STAGES
        assert (1 << L) * 64 <= 64 * 1024                   # the tile in shared memory
        for t in ("float", "double"):
            assert f"sc_fwht_tile<{t}, {L - L // 2}, {L // 2}>" in exprs
            # The second phase's row groups fill whole warps of 64 / sizeof(T) columns.
            assert ((64 // (4 if t == "float" else 8)) << (L // 2)) % 32 == 0
    if len(plan) >= 2:        # the SRHT's kept-rows pass (sc_fwht_select) needs R >= 32
        assert plan[-1] >= 5
