"""sketchcore_torch: PyTorch adapter of sketchcore (autograd ops, ``nn`` layers, builders).

Keeps Panther's public names, so a Panther user switches with one import::

    import sketchcore_torch as pr
    layer = pr.nn.SKLinear(784, 512, num_terms=8, low_rank=64)

Submodules are imported on first attribute access (``pr.nn``, ``pr.sketch``, ``pr.linalg``,
``pr.convert``, ``pr.builders``): ``import sketchcore_torch`` stays cheap, and each
submodule pulls in only what it needs.
"""
import importlib

__all__ = ["nn", "sketch", "linalg", "convert", "builders"]

_SUBMODULES = frozenset(__all__)


def __getattr__(name):
    # PEP 562 lazy submodules: the import system caches the module as an attribute of this
    # package after the first access, so this runs once per submodule.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES)
