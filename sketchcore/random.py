"""The one random number generator of sketchcore: counter-based Philox4x32-10.

Every random entry anywhere in the library is a pure function of ``(seed, stream, index)``:

* the 64-bit ``seed`` is the Philox key (low word first);
* the 128-bit counter holds ``index // 4`` in its two low words and the 64-bit ``stream`` id
  in its two high words, so one seed gives independent matrices for every operator kind,
  term and role (``make_stream``);
* word ``index`` of a stream is word ``index % 4`` of that counter's output.

Derived values (all computed identically by the CPU and CUDA kernels):

* uniform  ``(w + 1) * 2**-32`` in (0, 1];
* sign     ``-1`` when the word's top bit is set, else ``+1``;
* Gaussian entry ``i`` uses counter ``c = i // 4`` and is computed in float32 (float64
  outputs are the float32 value widened exactly): entries ``4c, 4c+1`` are the cosine and
  sine of one Box-Muller pair from words (0, 1), entries ``4c+2, 4c+3`` the pair from words
  (2, 3). For a pair of words ``(wu, wa)`` (every ``fma`` below is a fused multiply-add,
  every other operation a correctly rounded float32 operation)::

      u  = fma(float(wu), 2**-32, 2**-33)                # in (0, 1]
      r  = sqrt(-2 * log(u))                             # log: Cephes logf polynomial
      q  = ((wa + 2**29) mod 2**32) >> 30                # quadrant of the angle 2 pi wa / 2**32
      x  = float(int32(wa - q * 2**30)) * (2 pi / 2**32) # residual angle in [-pi/4, pi/4)
      (c, s) = Cephes cosf/sinf polynomials at x, rotated by q quarter turns
      gaussian = (r * c, r * s)

  The exact operation sequence (``sk_logf``, ``sk_gauss_pair``) is in
  ``sketchcore/_cpu/_philox.pxd``; the CUDA kernels repeat it and agree within a few ulps.
  ``scale`` multiplies in float64 before rounding to the output dtype.

Because nothing depends on the order of generation, any block of any operator can be
produced alone, by any thread, on any device, and gives the same numbers.
"""
import numbers
import os

import numpy as np

from sketchcore import _cpu

__all__ = ["STREAM_KINDS", "make_stream", "resolve_seed", "philox4x32", "random_words",
           "uniform", "signs", "gaussian"]

#: Stream namespaces: the top 16 bits of a stream id say which part of the library drew it.
STREAM_KINDS = {
    "user": 0,
    "gaussian": 1,
    "sign": 2,
    "sparse_sign": 3,
    "srht": 4,
    "sklinear": 5,
    "linalg": 6,
}

_MAX_SEED = 2 ** 64


def make_stream(kind, term=0, role=0):
    """Stream id for one random matrix.

    Parameters
    ----------
    kind : str
        One of ``STREAM_KINDS`` (operator kind or library part).
    term : int, default 0
        Term index, e.g. the ``i`` of ``U1s[i]``; ``0 <= term < 2**32``.
    role : int, default 0
        Which matrix of that term (row choice, sign, ...); ``0 <= role < 2**16``.

    Returns
    -------
    int
        ``(kind << 48) | (term << 16) | role``.
    """
    if kind not in STREAM_KINDS:
        raise ValueError(f"kind must be one of {sorted(STREAM_KINDS)}, got {kind!r}")
    term = _check_uint(term, "term", 32)
    role = _check_uint(role, "role", 16)
    return (STREAM_KINDS[kind] << 48) | (term << 16) | role


def _check_uint(value, name, bits):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 2 ** bits:
        raise ValueError(f"{name} must be in [0, 2**{bits}), got {value}")
    return value


def resolve_seed(seed):
    """Validate a seed, or draw one from the OS when ``seed`` is None.

    Parameters
    ----------
    seed : int or None
        An integer in ``[0, 2**64)`` (Python or NumPy integer), or None.

    Returns
    -------
    int
        The seed to record on the object that uses it, so its result can be reproduced.

    Raises
    ------
    TypeError
        ``seed`` is not an integer (floats, bools and strings are refused, not rounded).
    ValueError
        ``seed`` is negative or does not fit in 64 bits.
    """
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer in [0, 2**64) or None, "
                        f"got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def philox4x32(counter, key):
    """Raw Philox4x32-10: four 32-bit counter words, two key words -> uint32 array of 4."""
    return _cpu.philox4x32(counter, key)


def _check_span(start, count):
    start = _check_uint(start, "start", 64)
    count = _check_uint(count, "count", 63)
    return start, count


def _real_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def random_words(seed, stream, start, count):
    """Words ``start .. start + count - 1`` of a stream.

    Returns
    -------
    ndarray of shape (count,), uint32
    """
    start, count = _check_span(start, count)
    out = np.empty(count, dtype=np.uint32)
    _cpu.fill_words(_check_uint(seed, "seed", 64), _check_uint(stream, "stream", 64), start, out)
    return out


def uniform(seed, stream, start, count, dtype=np.float64):
    """Uniform (0, 1] values ``start .. start + count - 1`` of a stream.

    Returns
    -------
    ndarray of shape (count,)
    """
    start, count = _check_span(start, count)
    out = np.empty(count, dtype=_real_dtype(dtype))
    _cpu.fill_uniform(_check_uint(seed, "seed", 64), _check_uint(stream, "stream", 64), start, out)
    return out


def signs(seed, stream, start, count, dtype=np.float64, scale=1.0):
    """``+-scale`` values ``start .. start + count - 1`` of a stream.

    Returns
    -------
    ndarray of shape (count,)
    """
    start, count = _check_span(start, count)
    out = np.empty(count, dtype=_real_dtype(dtype))
    _cpu.fill_sign(_check_uint(seed, "seed", 64), _check_uint(stream, "stream", 64), start, out,
                   float(scale))
    return out


def gaussian(seed, stream, start, count, dtype=np.float64, scale=1.0):
    """``scale * N(0, 1)`` values ``start .. start + count - 1`` of a stream.

    Returns
    -------
    ndarray of shape (count,)
    """
    start, count = _check_span(start, count)
    out = np.empty(count, dtype=_real_dtype(dtype))
    _cpu.fill_gaussian(_check_uint(seed, "seed", 64), _check_uint(stream, "stream", 64), start, out,
                       float(scale))
    return out
