"""The one loader of sketchcore's CUDA kernels: NVRTC compile, per-device module cache.

All ``.cu`` files of this package form one program; ``.cuh`` files are handed to NVRTC as
in-memory headers. Templates are instantiated through NVRTC name expressions (one per
dtype combination, listed in ``name_expressions()``), so the Python side asks for a kernel by
its C++ name, e.g. ``kernel("sc_fill_sign<float>")``.

Compilation goes straight through NVRTC (``cupy.cuda.nvrtc``), not through
``cupy.RawModule``: it needs no GPU and no driver when the target architecture is given,
which is what lets CI compile every kernel (``compile_program(arch="sm_90")``) on a machine
without a GPU. At run time the architecture is the current device's; the binary is loaded
with ``cupy.cuda.function.Module`` and cached per device in memory and, keyed by a hash of
source + options + NVRTC version, on disk (``$SKETCHCORE_CACHE_DIR`` or
``~/.cache/sketchcore``), so a new process does not recompile.
"""
import hashlib
import json
import os
import tempfile
import threading
from importlib import resources

from sketchcore._cuda import _trace

__all__ = ["DTYPE_NAMES", "OPTIONS", "program_source", "headers", "name_expressions",
           "compile_program", "kernel", "launch", "device_arch", "grid_size"]

#: numpy dtype name -> C++ storage type used in the kernels' template arguments.
DTYPE_NAMES = {"float32": "float", "float64": "double", "float16": "sc_half",
               "bfloat16": "sc_bf16"}

_SOURCES = ("random.cu", "gemm.cu", "sparse.cu", "fwht.cu", "linear.cu", "lsqr.cu",
            "chol.cu")
_HEADERS = ("common.cuh",)

# --fmad=false: the Gaussian generator must match the CPU's float32 operation sequence
# bit for bit, so no multiply-add may be contracted behind our back (explicit fma() calls,
# used by the GEMM inner loops, still fuse).
OPTIONS = ("-std=c++17", "--fmad=false")

GEMM_TILES = ((64, 64), (128, 32), (256, 16))
OWNED_VECTORS = (1, 2)   # columns per thread of sc_sparse_apply_owned
SLOT_PLACES = (2, 4)     # words (place pairs) per slot of sc_sparse_apply_slots
SLOT_GROUPS = ((1, "float"), (4, "float"), (1, "double"))   # lane groups a warp, type
SLOT_SHIFTS = (0, 1)     # place = byte offset >> shift in sc_sparse_apply_slots' slots
FWHT_TILE_STAGES = range(4, 11)   # stages per pass of sc_fwht_tile (_fwht.TILE_*_STAGES)
NORMAL_PASS_COLUMNS = (1, 2, 4, 8, 16, 32)   # columns per lane of sc_normal_pass (n <= 32 NC)

_lock = threading.Lock()
_modules = {}        # device id -> (Module, {name expression: Function})


def _read(name):
    return resources.files(__package__).joinpath(name).read_text()


def program_source():
    """The whole CUDA program: every ``.cu`` file of the package, in a fixed order."""
    return "\n".join(f"// ---- {name}\n" + _read(name) for name in _SOURCES)


def headers():
    """``(names, contents)`` of the package's ``.cuh`` headers for NVRTC."""
    return tuple(_HEADERS), tuple(_read(h) for h in _HEADERS)


def name_expressions():
    """Every template instantiation the Python side launches (one list, used everywhere)."""
    exprs = []
    for t in ("float", "double"):
        exprs += [f"sc_fill_uniform<{t}>", f"sc_fill_sign<{t}>", f"sc_fill_gaussian<{t}>",
                  f"sc_sparse_apply_smem<{t}>", f"sc_sparse_apply_atomic<{t}>",
                  f"sc_sparse_apply_red<{t}>", f"sc_sparse_apply_right<{t}>",
                  f"sc_sparse_dense<{t}>", f"sc_fwht_pass<{t}>", f"sc_dense_block<{t}>"]
    exprs += [f"sc_sparse_apply_owned<{v}>" for v in OWNED_VECTORS]
    for t in ("float", "double"):
        exprs += [f"sc_fwht_tile<{t}, {(L + 1) // 2}, {L // 2}>" for L in FWHT_TILE_STAGES]
        exprs += [f"sc_fwht_select<{t}>"]
        exprs += [f"sc_lsqr_u<{t}>", f"sc_lsqr_p<{t}>", f"sc_lsqr_vectors<{t}>"]
        exprs += [f"sc_normal_pass<{t}, {nc}>" for nc in NORMAL_PASS_COLUMNS]
        exprs += [f"sc_pivoted_cholesky<{t}>"]
    for h in SLOT_PLACES:
        exprs += [f"sc_sparse_slots<{h}>"]
        exprs += [f"sc_sparse_apply_slots<{h}, {sh}, {g}, {t}>" for sh in SLOT_SHIFTS
                  for g, t in SLOT_GROUPS]
    for bm, bn in GEMM_TILES:
        for combo in gemm_combos():
            exprs.append(gemm_name(*combo, bm, bn, False))
        for t in ("float", "double"):      # generated operators: same-type products only
            exprs.append(gemm_name(t, t, t, t, bm, bn, True))
    for t in ("float", "double", "sc_half", "sc_bf16"):
        acc = "double" if t == "double" else "float"
        exprs += [wide_name(t, acc, 32), wide_name(t, acc, 64)]
    for t in ("float", "double", "sc_half", "sc_bf16"):
        acc = "double" if t == "double" else "float"
        exprs += [f"sc_gemm_finalize<{t}, {acc}>", f"sc_colsum<{t}, {acc}>",
                  f"sc_stack<{t}, {acc}>", f"sc_unstack_s1<{t}, {acc}>"]
    for t16 in ("sc_half", "sc_bf16"):     # tensor-core operands: factors float or x's type
        exprs += [f"sc_stack<float, {t16}>", f"sc_stack<{t16}, {t16}>",
                  f"sc_hidden16<{t16}>"]
    return exprs


def gemm_combos():
    """(TA, TB, TC, Acc) instantiations of sc_gemm.

    Same-type products for float32/float64 (operators, float32/float64 layers); for the
    16-bit layers one operand is the 16-bit activation and the other a float32 factor or
    float32 hidden state: (T, float) -> float, (float, float) -> T, (float, T) -> float.
    """
    combos = [("float", "float", "float", "float"), ("double", "double", "double", "double")]
    for t in ("sc_half", "sc_bf16"):
        combos += [(t, "float", "float", "float"), ("float", "float", t, "float"),
                   ("float", t, "float", "float")]
    return combos


def gemm_name(ta, tb, tc, acc, bm, bn, gen=False):
    return f"sc_gemm<{ta}, {tb}, {tc}, {acc}, {bm}, {bn}, {'true' if gen else 'false'}>"


def wide_name(tc, acc, rmax):
    """sc_wide instantiation: two columns per thread for R <= 32, one for R <= 64."""
    return f"sc_wide<{tc}, {acc}, {rmax}, {2 if rmax == 32 else 1}>"


def compile_program(arch, options=OPTIONS, exprs=None):
    """Compile the whole program with NVRTC for ``arch``; no GPU needed.

    Parameters
    ----------
    arch : str
        ``"sm_XX"`` (machine code, cubin) or ``"compute_XX"`` (PTX).
    options : tuple of str
        NVRTC options besides ``-arch``.
    exprs : list of str, optional
        Name expressions to instantiate (default: ``name_expressions()``).

    Returns
    -------
    binary : bytes
        cubin for ``sm_XX``, PTX for ``compute_XX``.
    mapping : dict
        Name expression -> lowered (mangled) symbol name.

    Raises
    ------
    RuntimeError
        NVRTC reports an error; the message carries NVRTC's log.
    """
    from cupy.cuda import nvrtc
    exprs = list(name_expressions() if exprs is None else exprs)
    names, contents = headers()
    prog = nvrtc.createProgram(program_source(), "sketchcore_kernels.cu",
                               [c.encode() for c in contents], [n.encode() for n in names])
    try:
        for e in exprs:
            nvrtc.addNameExpression(prog, e)
        try:
            nvrtc.compileProgram(prog, tuple(options) + (f"-arch={arch}",))
        except nvrtc.NVRTCError as exc:
            raise RuntimeError(f"NVRTC failed for {arch}:\n{nvrtc.getProgramLog(prog)}") from exc
        mapping = {e: nvrtc.getLoweredName(prog, e) for e in exprs}
        binary = nvrtc.getCUBIN(prog) if arch.startswith("sm_") else nvrtc.getPTX(prog)
        if isinstance(binary, str):
            binary = binary.encode()
        return binary, mapping
    finally:
        nvrtc.destroyProgram(prog)


def device_arch(device_id=None):
    """NVRTC ``-arch`` for a device: ``sm_XX`` when NVRTC can emit it, else ``compute_XX``.

    ``$SKETCHCORE_CUDA_ARCH`` overrides the choice.
    """
    import cupy
    from cupy.cuda import nvrtc
    forced = os.environ.get("SKETCHCORE_CUDA_ARCH")
    if forced:
        return forced
    dev = cupy.cuda.Device(device_id) if device_id is not None else cupy.cuda.Device()
    cc = int(dev.compute_capability)
    supported = [int(a) for a in nvrtc.getSupportedArchs()]
    if cc in supported:
        return f"sm_{cc}"
    # Newer than this NVRTC knows: PTX for the newest it knows, JIT-compiled by the driver.
    return f"compute_{max(a for a in supported if a <= cc)}"


def _cache_dir():
    return os.environ.get("SKETCHCORE_CACHE_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "sketchcore"))


def _cached_compile(arch):
    from cupy.cuda import nvrtc
    key = hashlib.sha256("\0".join(
        [program_source(), *headers()[1], *OPTIONS, arch, repr(nvrtc.getVersion()),
         *name_expressions()]).encode()).hexdigest()[:32]
    path = os.path.join(_cache_dir(), f"kernels-{key}")
    try:
        with open(path + ".bin", "rb") as fh:
            binary = fh.read()
        with open(path + ".json") as fh:
            mapping = json.load(fh)
        return binary, mapping
    except (OSError, ValueError):
        pass
    binary, mapping = compile_program(arch)
    try:   # best effort: a read-only home only costs a recompile next time
        os.makedirs(_cache_dir(), exist_ok=True)
        for suffix, data, mode in ((".bin", binary, "wb"),
                                   (".json", json.dumps(mapping), "w")):
            fd, tmp = tempfile.mkstemp(dir=_cache_dir())
            with os.fdopen(fd, mode) as fh:
                fh.write(data)
            os.replace(tmp, path + suffix)
    except OSError:
        pass
    return binary, mapping


def _module_for_current_device():
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    entry = _modules.get(dev)
    if entry is None:
        with _lock:
            entry = _modules.get(dev)
            if entry is None:
                binary, mapping = _cached_compile(device_arch(dev))
                module = cupy.cuda.function.Module()
                module.load(binary)
                entry = (module, mapping, {})
                _modules[dev] = entry
    return entry


def kernel(expr, shared_mem=0):
    """The compiled kernel for a name expression on the current device.

    ``shared_mem`` above 48 KiB raises the function's dynamic shared-memory limit first.
    """
    import cupy
    module, mapping, funcs = _module_for_current_device()
    entry = funcs.get(expr)
    if entry is None:
        if expr in mapping:
            symbol = mapping[expr]
        elif "<" not in expr:
            symbol = expr          # extern "C" kernels keep their plain names
        else:
            raise KeyError(f"kernel {expr!r} is not instantiated (see name_expressions())")
        entry = [module.get_function(symbol), 48 * 1024]
        funcs[expr] = entry
    if shared_mem > entry[1]:
        cupy.cuda.driver.funcSetAttribute(
            entry[0].ptr, cupy.cuda.driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            int(shared_mem))
        entry[1] = int(shared_mem)
    return entry[0]


def launch(expr, grid, block, args, shared_mem=0):
    """Launch a kernel on CuPy's current stream (torch's, inside the bridge's context)."""
    import cupy
    fn = kernel(expr, shared_mem)
    _trace.note_launch(fn.ptr, grid, block, shared_mem, args)
    fn(tuple(grid), tuple(block), tuple(args), shared_mem=int(shared_mem),
       stream=cupy.cuda.get_current_stream())


_props = {}          # device id -> (multiprocessors, opt-in shared memory per block)


def device_properties():
    """(multiprocessors, max opt-in shared memory per block in bytes) of the current device."""
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    props = _props.get(dev)
    if props is None:
        rt = cupy.cuda.runtime
        props = (rt.deviceGetAttribute(rt.cudaDevAttrMultiProcessorCount, dev),
                 rt.deviceGetAttribute(rt.cudaDevAttrMaxSharedMemoryPerBlockOptin, dev))
        _props[dev] = props
    return props


def grid_size(n, block=256, per_sm=8):
    """Blocks for a grid-stride loop over ``n`` items: enough to fill the device, no more."""
    sms = device_properties()[0]
    return max(1, min((int(n) + block - 1) // block, sms * per_sm))
