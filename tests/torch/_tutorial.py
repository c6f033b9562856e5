"""Access to the tutorial's example scripts (examples/) for the torch tests."""
import importlib
import pathlib
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def example(name):
    """Import a tutorial example module from examples/."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)
