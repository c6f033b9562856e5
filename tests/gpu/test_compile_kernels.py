"""Every CUDA kernel, every dtype instantiation, compiled by NVRTC with no GPU.

Runs on CI (no GPU, no driver): NVRTC only needs its shared library (the ``kernels`` extra
installs CuPy and NVRTC from PyPI). Skips only when CuPy itself is not importable.
"""
import re

import pytest

cupy = pytest.importorskip("cupy")

from sketchcore._cuda import _loader  # noqa: E402

# The oldest and newest architectures the kernels are meant for: Ampere (bf16 products,
# double atomics) and Hopper (the benchmark machine); PTX for the driver JIT as well.
ARCHS = ["sm_90", "compute_80"]


@pytest.fixture(scope="module")
def compiled():
    return {arch: _loader.compile_program(arch) for arch in ARCHS}


def _kernel_names(src):
    """Names of every __global__ function in the program (templates and extern "C")."""
    return set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(",
                          src))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_instantiation_compiles(compiled, arch):
    binary, mapping = compiled[arch]
    exprs = _loader.name_expressions()
    assert set(mapping) == set(exprs)
    assert "sc_sparse_apply_owned<1>" in mapping and "sc_sparse_apply_owned<2>" in mapping
    assert {f"sc_sparse_apply_slots<{h}, {sh}, {g}, {t}>" for h in (2, 4) for sh in (0, 1)
            for g, t in ((1, "float"), (4, "float"), (1, "double"))} <= set(mapping)
    assert {f"sc_sparse_slots<{h}>" for h in (2, 4)} <= set(mapping)
    for expr, lowered in mapping.items():
        assert lowered, expr
        # The symbol must be in the emitted cubin/PTX, i.e. the kernel really was generated.
        assert lowered.encode() in binary, f"{expr} ({lowered}) missing from {arch} output"
    if arch.startswith("sm_"):
        assert binary[:4] == b"\x7fELF"
    else:
        assert b".target " + arch.replace("compute_", "sm_").encode() in binary


def test_every_kernel_is_instantiated_for_every_dtype():
    src = _loader.program_source()
    names = _kernel_names(src)
    exprs = _loader.name_expressions()
    templated = {n for n in names if re.search(r"template\s*<[^>]*>\s*__global__\s+void\s+"
                                               r"(?:__launch_bounds__\([^)]*\)\s+)?" + n + r"\b",
                                               src)}
    assert templated, "no templated kernels found: the source scan is broken"
    for name in templated:
        used = [e for e in exprs if e.startswith(name + "<")]
        assert used, f"template kernel {name} is never instantiated"
        # The "owned" kernel is float32-only, the slot builder has no element type and
        # the "slots" kernel takes its type last (float by default).
        if name == "sc_sparse_apply_slots":
            assert any(e.endswith(", double>") for e in used), f"{name} lacks a double one"
        if (name.startswith(("sc_fill_", "sc_sparse_", "sc_fwht", "sc_dense"))
                and name not in ("sc_sparse_apply_owned", "sc_sparse_apply_slots",
                                 "sc_sparse_slots")):
            for t in ("float", "double"):
                assert any(e == f"{name}<{t}>" or e.startswith(f"{name}<{t}, ")
                           for e in exprs), f"{name} lacks a {t} instantiation"
    for t in ("float", "double", "sc_half", "sc_bf16"):
        assert any(e.startswith("sc_gemm<") and t in e for e in exprs), f"no {t} GEMM"
        assert any(e.startswith("sc_gemm_finalize<" + t) for e in exprs)


def test_extern_c_kernels_present(compiled):
    binary, _ = compiled["sm_90"]
    src = _loader.program_source()
    plain = re.findall(r'extern "C" __global__ void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\(',
                       src)
    assert plain and "sc_sparse_indices" in plain
    for name in plain:
        assert name.encode() in binary, name


def test_compile_error_is_reported():
    with pytest.raises(RuntimeError, match="NVRTC failed"):
        _loader.compile_program("sm_90", exprs=["sc_fill_sign<int_that_does_not_exist>"])


def test_import_without_gpu_is_harmless():
    # Importing the kernel package must not need a device (kernels compile on first use).
    import importlib
    mod = importlib.import_module("sketchcore._cuda")
    assert set(mod.__all__) >= {"fill_words", "sketched_linear_forward", "fwht_rows"}
