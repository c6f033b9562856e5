"""GPU benchmark of the sketch operators' CUDA kernels (``python -m bench.operators_gpu``).

Baselines measured in the same run: a device-to-device copy of the input (the memory
floor's neighbour), torch's ``index_add_`` CountSketch, and cuBLAS on an explicitly stored
dense operator.
"""
import math

import numpy as np

from bench.gpu_common import cuda_time, GpuBench


SKETCH_SIZES = (512, 1024, 2048, 4096)   # rows d of the sparse sketches of A (m x 256)


def main():
    import cupy
    from sketchcore import _cuda
    from sketchcore.random import make_stream
    bench = GpuBench("operators_gpu", "Sketch operators on the GPU (CuPy arrays)")
    dev = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    m, n = 1_000_000, 256
    rng = cupy.random.default_rng(0)
    A = rng.standard_normal((m, n), dtype=cupy.float32)
    case = f"{m}x{n} float32"
    dst = cupy.empty_like(A)

    def d2d_copy(src=A, out=dst):
        cupy.cuda.runtime.memcpyAsync(out.data.ptr, src.data.ptr, src.nbytes,
                                      cupy.cuda.runtime.memcpyDeviceToDevice,
                                      cupy.cuda.get_current_stream().ptr)

    copy_t = cuda_time(d2d_copy)

    def first_applies(apply):
        """``apply`` timed as an operator's first and second applies are: building its
        slot tables in the call (the table cache off), as the sketch of a fresh seed is."""
        from sketchcore._cuda._table_cache import slot_tables
        limit, slot_tables.limit = slot_tables.limit, 0
        try:
            return cuda_time(apply)
        finally:
            slot_tables.limit = limit
    seed, stream = 1, make_stream("sparse_sign", 0, 0)
    for d in SKETCH_SIZES:
        cased = f"{case}, d={d}"
        bench.add(cased, "device copy", copy_t)
        torch_impl = None
        try:
            import torch
            At = torch.from_dlpack(A)
            rows, signs = _cuda.sparse_sign_indices(d, 1, seed, stream, 0, m)
            idx = torch.from_dlpack(rows.ravel().astype(cupy.int64))
            sg = torch.from_dlpack(signs.ravel().astype(cupy.float32))[:, None]

            def torch_cs():
                out = torch.zeros((d, n), device="cuda", dtype=torch.float32)
                return out.index_add_(0, idx, At * sg)

            torch_impl = "torch index_add_ CountSketch"
            bench.add(cased, torch_impl, cuda_time(torch_cs))
        except ImportError:
            pass
        for nnz, name in ((1, "CountSketch"), (8, "SparseSign nnz=8")):
            t = cuda_time(lambda: _cuda.sparse_sign_left(A, d, nnz, seed, stream))
            bench.add(cased, f"sketchcore {name}", t, baseline="device copy")
            if nnz > 1:
                bench.add(cased, f"  {name}, first two applies", first_applies(
                    lambda: _cuda.sparse_sign_left(A, d, nnz, seed, stream)),
                    baseline="device copy")
            if nnz == 1 and torch_impl:
                bench.add(cased, "sketchcore CountSketch ", t, baseline=torch_impl)
            for method in ("smem", "red", "owned", "slots"):   # keep the default honest
                t = cuda_time(lambda: _cuda.sparse_sign_left(A, d, nnz, seed, stream,
                                                             method=method))
                bench.add(cased, f"  {name} kernel={method}", t, baseline="device copy")
    # float64 (lstsq's sketches): the same bytes as the float32 matrix, half the columns.
    A64 = rng.standard_normal((m, n // 2), dtype=cupy.float64)
    dst64 = cupy.empty_like(A64)
    copy64 = cuda_time(lambda: d2d_copy(A64, dst64))
    for d in (256, 512, 1024):
        case64 = f"{m}x{n // 2} float64, d={d}"
        bench.add(case64, "device copy", copy64)
        bench.add(case64, "sketchcore SparseSign nnz=8",
                  cuda_time(lambda: _cuda.sparse_sign_left(A64, d, 8, seed, stream)),
                  baseline="device copy")
        bench.add(case64, "  SparseSign nnz=8, first two applies",
                  first_applies(lambda: _cuda.sparse_sign_left(A64, d, 8, seed, stream)),
                  baseline="device copy")
        bench.add(case64, "  SparseSign nnz=8 kernel=red",
                  cuda_time(lambda: _cuda.sparse_sign_left(A64, d, 8, seed, stream,
                                                           method="red")),
                  baseline="device copy")
    # Right sketch A @ S.T of the transposed problem (256 x 1e6).
    At2 = cupy.ascontiguousarray(A[:100_000].T)
    case_r = f"right {At2.shape[0]}x{At2.shape[1]} float32, d=1024"
    dst2 = cupy.empty_like(At2)
    bench.add(case_r, "device copy", cuda_time(lambda: d2d_copy(At2, dst2)))
    for nnz, name in ((1, "CountSketch"), (8, "SparseSign nnz=8")):
        bench.add(case_r, f"sketchcore {name} right",
                  cuda_time(lambda: _cuda.sparse_sign_right(At2, 1024, nnz, seed, stream)),
                  baseline="device copy")
        bench.add(case_r, f"  {name} right, rows kernel",
                  cuda_time(lambda: _cuda.sparse_sign_right(At2, 1024, nnz, seed, stream,
                                                            method="rows")),
                  baseline="device copy")
        bench.add(case_r, f"  {name} right via a transposed copy",
                  cuda_time(lambda: _cuda.sparse_sign_right(At2, 1024, nnz, seed, stream,
                                                            method="transpose")),
                  baseline="device copy")
    # Dense operators: generated (slabs of S into a bounded workspace + cuBLAS, or tiles
    # generated inside the fused product kernel; the default picks by the width of A) vs
    # cuBLAS on a stored operator (made once, outside the timing: the baseline's favour).
    def dense_rows(case, label, apply, X, d, st, stored, product):
        """cuBLAS on the stored S (``product``, the baseline), then ``apply`` (a dense
        sketch's left or right apply of X) by default and by each method."""
        base = f"cuBLAS stored {stored}"
        bench.add(case, base, cuda_time(product))
        bench.add(case, f"sketchcore {label} (generated)",
                  cuda_time(lambda: apply(X, d, seed, st)), baseline=base)
        for method, how in (("slabs", "slabs + cuBLAS"), ("fused", "fused kernel")):
            bench.add(case, f"  {label}, {how}",
                      cuda_time(lambda: apply(X, d, seed, st, method=method)), baseline=base)

    for md, nd, d in ((65536, 256, 256), (1_000_000, 16, 128)):
        Ad = rng.standard_normal((md, nd), dtype=cupy.float32)
        for kind, name in ((0, "gaussian"), (1, "sign")):
            st = make_stream(name, 0, 0)
            S = _cuda.dense_block(kind, seed, st, md, 0, d, 0, md, 1 / math.sqrt(d),
                                  np.float32)
            dense_rows(f"{md}x{nd} float32, d={d}", name, getattr(_cuda, f"{name}_left"),
                       Ad, d, st, f"{name} S @ A", lambda: S @ Ad)
            if nd == 256:                  # the right apply A @ S.T of the transposed problem
                Adt = cupy.ascontiguousarray(Ad.T)
                dense_rows(f"right {nd}x{md} float32, d={d}", f"{name} right",
                           getattr(_cuda, f"{name}_right"), Adt, d, st, f"{name} A @ S.T",
                           lambda: Adt @ S.T)
    # SRHT pieces: FWHT of the padded 2^20 x 256 matrix.
    p = 1 << 20
    X = cupy.zeros((p, n), dtype=cupy.float32)
    X[:m] = A
    case_f = f"FWHT {p}x{n} float32"
    dstX = cupy.empty_like(X)
    bench.add(case_f, "device copy", cuda_time(lambda: d2d_copy(X, dstX)))
    bench.add(case_f, "sketchcore fwht_rows (in place)", cuda_time(lambda: _cuda.fwht_rows(X)),
              baseline="device copy")
    # The whole SRHT left apply (signs, padding to 2^20, FWHT, row selection) on A.
    case_s = f"SRHT {m}x{n} float32, d=1024"
    rows = cupy.arange(0, p, p // 1024, dtype=cupy.int64)
    bench.add(case_s, "device copy", cuda_time(lambda: d2d_copy(A, dst)))
    bench.add(case_s, "sketchcore SRHT left", cuda_time(
        lambda: _cuda.srht_left(A, rows, seed, make_stream("srht", 0, 0))),
        baseline="device copy")
    bench.notes.append("CountSketch / SparseSign targets: within 2x of a device copy "
                       "(speed-up vs device copy >= 0.5). sketchcore's own sketches of a "
                       "256-column matrix have d <= 4 x 256 = 1024 (lstsq's default); d = 2048 "
                       "and 4096 are larger sketches, with fewer rows of A per row of Y in "
                       "each chunk the slots kernel stages.")
    from sketchcore._cuda import _sparse
    from sketchcore._cuda._loader import device_properties
    too_big = [d for d in SKETCH_SIZES if _sparse._owned_smem(d, 8) > device_properties()[1]]
    if too_big:   # say which "owned" rows actually ran another kernel
        bench.notes.append(f"kernel=owned needs d x 32 floats of shared memory; at d = "
                           f"{', '.join(map(str, too_big))} it falls back to kernel=red "
                           f"(and so do nnz = 1 rows).")
    bench.notes.append(f"kernel=slots (the default for d >= {_sparse.SLOTS_MIN_D}, nnz >= 2) "
                       f"falls back to kernel=owned for nnz = 1, i.e. to red; in float32 it "
                       f"runs one lane group (64-column tiles) up to d = "
                       f"{_sparse._SLOT_THREADS}, four (16-column tiles) above.")
    bench.notes.append("SparseSign rows time an operator applied again, as the timing's "
                       "warm-up calls leave it: its slot tables (which rows of A add into "
                       "which rows of Y, a function of the seed and the shapes alone) are kept "
                       "from its second apply on, like a cuFFT plan, and the call launches the "
                       "apply kernel alone, replayed from C. 'first two applies' rows time "
                       "the calls that build the tables (a fresh seed's).")
    print(bench.write(dev))


if __name__ == "__main__":
    main()
