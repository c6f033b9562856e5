"""Shared reference helpers of the GPU tests (plain NumPy, float64)."""
import numpy as np

EPS = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}


def gamma(n, dtype):
    """Higham's gamma_n = n u / (1 - n u): worst-case relative error of an n-term sum."""
    u = EPS[np.dtype(dtype)]
    return n * u / (1 - n * u)


def assert_within(got, ref, bound, what):
    """|got - ref| <= bound elementwise (bound from the error analysis), with a report."""
    got = np.asarray(got, dtype=np.float64)
    err = np.abs(got - ref)
    bad = err > bound
    assert not np.isnan(got).any(), f"{what}: NaN in result"
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} entries off; worst error "
                           f"{err.max():.3e} vs bound {np.asarray(bound).max():.3e}")


def ulp_diff32(a, b):
    """Distance in float32 ulps (monotone integer mapping of the bit patterns)."""
    def key(x):
        i = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(key(a) - key(b))
