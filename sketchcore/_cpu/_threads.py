"""BLAS thread control for kernels that call BLAS from their own OpenMP threads.

A kernel that runs gemm inside an OpenMP region must keep BLAS single-threaded there, or
the two thread pools oversubscribe the cores (and OpenBLAS would split work differently
with the thread count). One ``ThreadpoolController`` is built lazily and reused, because
building it scans the loaded libraries (milliseconds) while limiting costs microseconds.
"""
import contextlib

__all__ = ["blas_single_thread"]

_controller = None


def _get_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def blas_single_thread():
    """Context in which every loaded BLAS runs on the calling thread only."""
    with _get_controller().limit(limits=1, user_api="blas"):
        yield
