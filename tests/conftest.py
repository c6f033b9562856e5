"""Shared test configuration: the ``gpu`` marker's skip-or-fail rule, hypothesis profiles."""
import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REQUIRE_GPU = os.environ.get("SKETCHCORE_REQUIRE_GPU", "0") == "1"


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    # get_closest_marker, not `"gpu" in item.keywords`: keywords also hold directory names,
    # so every test under tests/gpu/ (the CPU-only NVRTC compile test too) would count.
    if any(item.get_closest_marker("gpu") for item in items) and not gpu_available():
        for item in items:
            if item.get_closest_marker("gpu") is None:
                continue
            if REQUIRE_GPU:
                item.add_marker(pytest.mark.xfail(
                    reason="SKETCHCORE_REQUIRE_GPU=1 but no GPU", run=False, strict=True))
            else:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (CuPy)"))


def pytest_sessionfinish(session, exitstatus):
    # With SKETCHCORE_REQUIRE_GPU=1 a missing GPU must fail the run, never pass as skips.
    if REQUIRE_GPU and not gpu_available():
        session.exitstatus = 1
