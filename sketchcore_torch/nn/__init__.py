"""Sketched ``torch.nn`` layers (Panther's names)."""
from sketchcore_torch.nn.linear import SKLinear

__all__ = ["SKLinear"]
