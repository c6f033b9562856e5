"""sketchcore: randomized linear algebra (sketching) on NumPy and CuPy arrays.

Public names are re-exported here from small private modules; see ``__all__``.
"""
from sketchcore import random
from sketchcore.random import resolve_seed

__version__ = "0.1.0"

__all__ = ["random", "resolve_seed", "__version__"]
