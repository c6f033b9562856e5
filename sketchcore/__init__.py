"""sketchcore: randomized linear algebra (sketching) on NumPy and CuPy arrays.

Public names are re-exported here from small private modules; see ``__all__``.
"""
from sketchcore import random
from sketchcore.random import resolve_seed
from sketchcore.operators import (SketchOperator, GaussianSketch, SignSketch,  # operators
                                  SparseSignSketch, CountSketch, SRHT)  # operators

__version__ = "0.1.0"

__all__ = ["random", "resolve_seed", "__version__"]
__all__ += ["SketchOperator", "GaussianSketch", "SignSketch", "SparseSignSketch",  # operators
            "CountSketch", "SRHT"]  # operators
from sketchcore import linalg  # linalg
from sketchcore.linalg import sketched_matmul  # linalg
__all__ += ["linalg", "sketched_matmul"]  # linalg
from sketchcore import layers  # layers
__all__ += ["layers"]  # layers
