"""CPU kernels (Cython). Reached through ``sketchcore._backend``, never imported by users."""
from sketchcore._cpu._random import (philox4x32, fill_words, fill_uniform, fill_sign,
                                     fill_gaussian)

__all__ = ["philox4x32", "fill_words", "fill_uniform", "fill_sign", "fill_gaussian"]
