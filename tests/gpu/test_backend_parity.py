"""The CUDA kernel package exposes every name of the CPU one (no GPU or CuPy needed)."""
import inspect

from sketchcore import _cpu, _cuda


def test_cuda_mirrors_cpu_names():
    missing = sorted(set(_cpu.__all__) - set(_cuda.__all__))
    assert not missing, f"sketchcore._cuda lacks {missing}"
    for name in _cuda.__all__:
        assert callable(getattr(_cuda, name)), name


def test_cuda_signatures_accept_cpu_arguments():
    # Every positional parameter of the CPU kernel exists, in order, on the CUDA one.
    for name in _cpu.__all__:
        try:
            cpu = inspect.signature(getattr(_cpu, name))
        except (TypeError, ValueError):   # some Cython builds hide signatures
            continue
        gpu = inspect.signature(getattr(_cuda, name))
        cpu_names = [p.name for p in cpu.parameters.values()]
        gpu_names = [p.name for p in gpu.parameters.values()][:len(cpu_names)]
        assert len(gpu_names) == len(cpu_names), (name, cpu_names, gpu_names)
