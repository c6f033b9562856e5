"""The ``out=`` results of the CUDA SKLinear entry points are checked before any kernel runs
(no GPU needed: the check reads shapes, dtypes and flags only)."""
import numpy as np
import pytest

from sketchcore._cuda._linear import _new


def test_given_result_is_used_when_it_matches():
    a = np.empty((3, 4), dtype=np.float32)
    assert _new((a,), 0, (3, 4), np.float32) is a


@pytest.mark.parametrize("bad, match", [
    (np.empty((4, 3), dtype=np.float32), r"out\[0\]: expected a C-contiguous float32 array "
                                         r"of shape \(3, 4\), got float32 \(4, 3\)"),
    (np.empty((3, 4), dtype=np.float64), r"got float64 \(3, 4\)"),
    (np.empty((4, 3), dtype=np.float32).T, r"C-contiguous"),
])
def test_mismatched_result_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        _new((bad,), 0, (3, 4), np.float32)
