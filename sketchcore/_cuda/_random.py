"""Philox fills on the GPU: the CUDA twins of ``sketchcore._cpu._random`` (same signatures)."""
import numpy as np

from sketchcore._cuda._loader import launch, grid_size
from sketchcore._cuda._common import ctype_of, i64, u64, f64

__all__ = ["philox4x32", "philox4x32_batch", "fill_words", "fill_uniform", "fill_sign",
           "fill_gaussian"]


def philox4x32_batch(counters, keys):
    """Philox4x32-10 of many (counter, key) pairs on the GPU.

    Parameters
    ----------
    counters : cupy.ndarray of shape (n, 4), uint32
    keys : cupy.ndarray of shape (n, 2), uint32

    Returns
    -------
    cupy.ndarray of shape (n, 4), uint32
    """
    import cupy
    counters = cupy.ascontiguousarray(counters, dtype=cupy.uint32)
    keys = cupy.ascontiguousarray(keys, dtype=cupy.uint32)
    if counters.ndim != 2 or counters.shape[1] != 4:
        raise ValueError(f"counters must have shape (n, 4), got {counters.shape}")
    if keys.shape != (counters.shape[0], 2):
        raise ValueError(f"keys must have shape ({counters.shape[0]}, 2), got {keys.shape}")
    n = counters.shape[0]
    out = cupy.empty((n, 4), dtype=cupy.uint32)
    if n:
        launch("sc_philox4x32", (grid_size(n),), (256,), (counters, keys, out, i64(n)))
    return out


def philox4x32(counter, key):
    """One Philox4x32-10 evaluation computed on the GPU -> NumPy uint32 array of 4."""
    import cupy
    c = cupy.asarray(np.asarray([int(v) for v in counter], dtype=np.uint32).reshape(1, 4))
    k = cupy.asarray(np.asarray([int(v) for v in key], dtype=np.uint32).reshape(1, 2))
    return cupy.asnumpy(philox4x32_batch(c, k))[0]


def _check_out(out, kinds):
    import cupy
    if not isinstance(out, cupy.ndarray) or out.ndim != 1 or not out.flags.c_contiguous:
        raise TypeError("out must be a 1-D C-contiguous CuPy array")
    if np.dtype(out.dtype).name not in kinds:
        raise TypeError(f"out must have dtype in {kinds}, got {out.dtype}")


def fill_words(seed, stream, start, out):
    """out[i] = word (start + i) of the stream."""
    _check_out(out, ("uint32",))
    n = out.size
    if n:
        launch("sc_fill_words", (grid_size(n),), (256,), (u64(seed), u64(stream), u64(start),
                                                         out, i64(n)))


def fill_uniform(seed, stream, start, out):
    """out[i] = uniform in (0, 1] from word (start + i)."""
    _check_out(out, ("float32", "float64"))
    n = out.size
    if n:
        launch(f"sc_fill_uniform<{ctype_of(out)}>", (grid_size(n),), (256,),
               (u64(seed), u64(stream), u64(start), out, i64(n)))


def fill_sign(seed, stream, start, out, scale):
    """out[i] = +scale or -scale from the top bit of word (start + i)."""
    _check_out(out, ("float32", "float64"))
    n = out.size
    if n:
        launch(f"sc_fill_sign<{ctype_of(out)}>", (grid_size(n),), (256,),
               (u64(seed), u64(stream), u64(start), out, i64(n), f64(scale)))


def fill_gaussian(seed, stream, start, out, scale):
    """out[i] = scale * N(0, 1) entry (start + i) of the stream (float32 Box-Muller)."""
    _check_out(out, ("float32", "float64"))
    n = out.size
    if n:
        launch(f"sc_fill_gaussian<{ctype_of(out)}>", (grid_size(n),), (256,),
               (u64(seed), u64(stream), u64(start), out, i64(n), f64(scale)))
