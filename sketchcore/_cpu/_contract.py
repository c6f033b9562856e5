"""The input check every operator kernel of ``sketchcore._cpu`` applies (see the contract in
``sketchcore/_cpu/__init__.py``): the public layer validates and converts user input, so a
failure here is a library bug, reported before any pointer is taken."""
import numpy as np

__all__ = ["check_kernel_input"]


def check_kernel_input(a, name):
    """Raise TypeError unless ``a`` is a C-contiguous 2-D float32/float64 ndarray."""
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype not in (np.float32, np.float64) \
            or not a.flags.c_contiguous:
        raise TypeError(f"{name} kernel needs a C-contiguous 2-D float32/float64 ndarray, got "
                        f"{type(a).__name__} {getattr(a, 'dtype', '')} "
                        f"{getattr(a, 'shape', '')}")
