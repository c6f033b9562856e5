"""Fixtures shared by the torch tests."""
import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module")
def one_thread():
    # The CI machine's two cores are shared by several jobs: intra-op threads waiting on each
    # other for a core made the tutorial's small models 10-40x slower, so they run
    # single-threaded (torch and BLAS), and the setting is restored afterwards.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)

