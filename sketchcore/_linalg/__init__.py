"""Private building blocks of :mod:`sketchcore.linalg` (one algorithm per module)."""
__all__ = []
