"""torch.library custom ops of the sketched layers: kernels, fake kernels, autograd.

Two ops in the ``sketchcore`` namespace wrap sketchcore's array kernels (CPU: Cython/BLAS;
CUDA: whatever ``sketchcore._backend.get_backend`` returns for CuPy arrays):

``sketchcore::sklinear_forward(x, S1s, S2s, U1s, U2s, bias) -> (y, hidden)``
    ``y = x @ W_eff + bias``; ``hidden = x @ [S1s | U2s]`` (batch, 2Lk) is kept for the
    backward, which then needs no extra pass over ``x``. ``hidden`` is marked
    non-differentiable: it is a function of ``x`` and the factors, and the backward op's own
    derivative routes its dependence through ``x`` (see ``_backward_backward``).
``sketchcore::sklinear_backward(grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x,
need_weights) -> (grad_x, grad_S1s, grad_S2s, grad_bias)``
    Gradients not asked for come back empty (shape (0,)) and cost nothing.

Both are differentiable (the backward's derivative is written with the two ops
themselves), so gradients of any order exist; both have fake kernels, so
``torch.compile(fullgraph=True)`` traces through them. Eager calls from ``sketched_linear``
and ``SKLinear`` use ``_EagerSKLinear``, an ``autograd.Function`` over the same kernels and
formulas that skips the dispatcher's per-call cost. Half-precision inputs are computed in
float32 and returned in the inputs' dtype (``hidden`` stays float32).
"""
import os
from contextlib import nullcontext
from typing import Optional, Tuple

import torch
from torch import Tensor

from sketchcore._backend import get_backend
from sketchcore_torch._bridge import to_array, to_tensor

__all__ = ["sketched_linear", "sklinear_forward", "sklinear_backward"]

_HALF = (torch.float16, torch.bfloat16)
_EMPTY_SHAPE = (0,)


def _compute_dtype(dtype):
    return torch.float32 if dtype in _HALF else dtype


def _arrays(dtype, *tensors):
    """Contiguous NumPy/CuPy views of the tensors in the compute dtype (None passes through),
    and the kernel package that serves them."""
    out = []
    cpu = True
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        if t.dtype != dtype:
            t = t.to(dtype)
        if not t.is_contiguous():
            t = t.contiguous()
        if t.device.type == "cpu":
            # Fast path of _bridge.to_array for the common case (no conj/neg views here).
            out.append(t.detach().numpy())
        else:
            cpu = False
            out.append(to_array(t))
    # Mixed devices (or CuPy) go through the dispatcher, which refuses mixtures clearly.
    return out, (_cpu_backend() if cpu else get_backend(*out))


def _cpu_backend():
    from sketchcore import _cpu
    return _cpu


# ------------------------------------------------------------- CUDA fast path (GPU engineer)
# CUDA tensors go to sketchcore._cuda directly: one DLPack view per tensor, 16-bit
# activations passed as they are (no float32 copies of x, y, grad_y, grad_x; bfloat16 travels
# as an int16 view, CuPy having no bfloat16), every launch on torch's current stream.
_CUDA_FLOAT = (torch.float32, torch.float64)


def _cuda_ok(x, S1s):
    """Whether the fast path takes these dtypes (else the generic path above runs)."""
    if not (x.is_cuda and S1s.is_cuda):
        return False
    if x.dtype in _CUDA_FLOAT:
        return S1s.dtype == x.dtype
    return x.dtype in _HALF and S1s.dtype in (x.dtype, torch.float32)


_CUPY_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                torch.bfloat16: "int16"}   # bfloat16 travels as its bits


_views = {}          # (address, shape, dtype, device) -> CuPy view (see _cuda_view)
_VIEW_CACHE_SIZE = 256


def _cuda_view(t):
    """A CuPy array over a CUDA tensor's memory, contiguous (copied when it is not).

    Built from the data pointer rather than through DLPack: ``cupy.from_dlpack`` took
    about 80 us of host time per tensor under the profiler on the H200 machine (torch's
    ``__dlpack__`` queries the current stream and device several times), for 13 tensors
    per forward+backward, which left the layer host-bound. The stream ordering DLPack would
    arrange is already given: every kernel is launched on torch's current stream
    (``cuda_stream``).

    A view of a contiguous tensor is a pure function of (address, shape, dtype, device), so
    it is cached under that key (parameters every call; activations too, since torch's
    caching allocator hands the same blocks back each step): building one costs about 4 us.
    Cached views own nothing; the caller's tensor keeps the memory alive while the kernels
    that use the view are queued, as the stream-ordered allocator requires. A copy made for
    a non-contiguous tensor is kept alive by its (uncached) view instead."""
    import cupy
    if t is None:
        return None
    contiguous = t.is_contiguous()
    if contiguous:
        key = (t.data_ptr(), t.shape, t.dtype, t.get_device())
        view = _views.get(key)
        if view is not None:
            return view
    else:
        t = t.contiguous()
    dtype = _CUPY_DTYPES[t.dtype]
    if t.numel() == 0:
        return cupy.empty(tuple(t.shape), dtype=dtype)
    mem = cupy.cuda.UnownedMemory(t.data_ptr(), t.numel() * t.element_size(),
                                  None if contiguous else t, t.get_device())
    view = cupy.ndarray(tuple(t.shape), dtype=dtype, memptr=cupy.cuda.MemoryPointer(mem, 0))
    if contiguous:
        if len(_views) >= _VIEW_CACHE_SIZE:
            _views.clear()
        _views[key] = view
    return view


# Launch traces (sketchcore._cuda._trace): the first eager call of a configuration runs the
# ordinary path while its launches are recorded; later calls replay them with the new
# tensors' addresses, temporaries in one workspace tensor. A backward is recorded after a
# recorded forward (its launches may address the forward's temporaries, which a replayed
# forward keeps in its workspace), so a training forward keeps recording until a backward
# of its configuration has been. SKETCHCORE_TRACE=0 turns replays off.
# A training forward leaves saved["trace"] = (forward key, its block (None when it was
# recorded), its workspace's address, its recorded temporaries (None when it replayed), the
# backward's workspace address in the block, that workspace's bytes).
_TRACE = os.environ.get("SKETCHCORE_TRACE", "1") != "0"
_fwd_traces = {}     # forward key -> Trace, or None where recording failed
_bwd_traces = {}     # (forward key, flags, dtypes) -> Trace or None
# Forward keys with a backward trace -> the largest workspace their backward traces need:
# a replayed training forward allocates it with its own, so the backward allocates none.
_bwd_recorded = {}
_TRACE_CACHE_SIZE = 512  # configurations kept (each new batch size is one): then start over
_ALIGN = 256             # workspace regions start on this many bytes (cudaMalloc's alignment)


def _remember(cache, key, trace):
    if len(cache) >= _TRACE_CACHE_SIZE:
        _fwd_traces.clear()
        _bwd_traces.clear()
        _bwd_recorded.clear()
    cache[key] = trace


def _aligned(nbytes):
    return -(-nbytes // _ALIGN) * _ALIGN


_modules = None


def _cuda_modules():
    """(sketchcore._cuda, its _trace and _linear, _bridge.cuda_stream), imported on first
    use: CuPy loads only when a CUDA tensor comes, and a per-call ``import`` statement costs
    about a microsecond of host time each (these calls are host-bound)."""
    global _modules
    if _modules is None:
        from sketchcore import _cuda
        from sketchcore._cuda import _trace, _linear
        from sketchcore_torch._bridge import cuda_stream
        _modules = (_cuda, _trace, _linear, cuda_stream)
    return _modules


def _traceable(device_index):
    """Replays launch on the current device: take tensors on it only."""
    return _TRACE and device_index == torch._C._cuda_getDevice()


def _slots(tensors):
    return [0 if t is None else t.data_ptr() for t in tensors]


def _regions(tensors):
    return [(t.data_ptr(), t.numel() * t.element_size(), i, 0)
            for i, t in enumerate(tensors) if t is not None]


def _cuda_forward(x, S1s, S2s, U1s, U2s, bias, saved=None):
    _cuda, _trace, _linear, cuda_stream = _cuda_modules()
    storage = "bfloat16" if x.dtype == torch.bfloat16 else None
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)        # the kernel adds the bias in the output's type
    x, S1s, S2s, U1s, U2s = (t.contiguous() for t in (x, S1s, S2s, U1s, U2s))
    bias = None if bias is None else bias.contiguous()
    L, _, k = S1s.shape
    # Results in torch's allocator, written by the kernels through CuPy views: no DLPack
    # round trip on the way back (tens of microseconds of host time per tensor).
    y = x.new_empty((x.shape[0], S2s.shape[2]))
    hidden_dtype = _compute_dtype(x.dtype)
    hidden_shape = (x.shape[0], 2 * L * k)
    index = x.get_device()
    traceable = _traceable(index)
    key = (x.shape, x.dtype, S1s.shape, S1s.dtype, S2s.shape,
           None if bias is None else bias.dtype, index, _linear.HALF_PRODUCTS)
    trace = _fwd_traces.get(key) if traceable else None
    if trace is not None and (saved is None or key in _bwd_recorded):
        # One block holds hidden, this replay's workspace and, in training, the workspace
        # of the backward to come: each allocation costs 3-5 us of host time, and these
        # calls are host-bound. hidden keeps the block alive until the backward.
        item = hidden_dtype.itemsize
        hidden_bytes = _aligned(hidden_shape[0] * hidden_shape[1] * item)
        fwd_bytes = _aligned(trace.workspace_bytes)
        bwd_bytes = 0 if saved is None else _bwd_recorded[key]
        block = x.new_empty(((hidden_bytes + fwd_bytes + bwd_bytes) // item,),
                            dtype=hidden_dtype)
        hidden = block.as_strided(hidden_shape, (hidden_shape[1], 1))
        base = block.data_ptr()
        trace.replay(_slots((x, S1s, S2s, U1s, U2s, bias, y, hidden)), base + hidden_bytes,
                     torch._C._cuda_getCurrentRawStream(index))
        if saved is not None:
            saved["trace"] = (key, block, base + hidden_bytes, None,
                              base + hidden_bytes + fwd_bytes, bwd_bytes)
        return y, hidden
    hidden = x.new_empty(hidden_shape, dtype=hidden_dtype)
    tensors = (x, S1s, S2s, U1s, U2s, bias, y, hidden)
    rec = _trace.record(_regions(tensors), len(tensors)) if (
        traceable and (key not in _fwd_traces or trace is not None)) else None
    with cuda_stream(x.device):
        args = [_cuda_view(t) for t in (x, S1s, S2s, U1s, U2s, bias)]
        with rec if rec is not None else nullcontext():
            _cuda.sketched_linear_forward(*args, storage=storage,
                                          out=(_cuda_view(y), _cuda_view(hidden)), saved=saved)
    if rec is not None:
        _remember(_fwd_traces, key, rec.trace)
        if saved is not None and rec.trace is not None:
            saved["trace"] = (key, None, None, rec.temps, 0, 0)
    return y, hidden


def _grad_block(S1s, S2s, has_bias, need_weights, shared=True):
    """(grad_S1s, grad_S2s, grad_bias), those asked for (None for the others).

    ``shared``: in one allocation, grad_S2s first, grad_bias right after it (the 16-bit
    kernels fill both with one product), grad_S1s from the next aligned offset; views by
    ``as_strided``, the cheapest on the host (slicing and ``view`` cost 3 us each). For the
    eager autograd.Function only: a custom op's results must not alias each other (torch
    checks it under torch.compile and opcheck), so the op gets three allocations."""
    L, n_in, k = S1s.shape
    o = S2s.shape[2]
    if not shared:
        return (S1s.new_empty(S1s.shape) if need_weights else None,
                S1s.new_empty(S2s.shape) if need_weights else None,
                S1s.new_empty((o,)) if has_bias else None)
    n2 = L * k * o if need_weights else 0
    nb = o if has_bias else 0
    item = S1s.dtype.itemsize
    off1 = _aligned((n2 + nb) * item) // item
    n1 = L * n_in * k if need_weights else 0
    if not n1 + nb:
        return None, None, None
    block = S1s.new_empty(((off1 + n1) if n1 else nb,))
    if not need_weights:
        return None, None, block
    return (block.as_strided((L, n_in, k), (n_in * k, k, 1), off1),
            block.as_strided((L, k, o), (k * o, o, 1), 0),
            block.as_strided((o,), (1,), n2) if has_bias else None)


def _cuda_backward(grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x, need_weights,
                   saved=None):
    _cuda, _trace, _linear, cuda_stream = _cuda_modules()
    storage = "bfloat16" if x.dtype == torch.bfloat16 else None
    if grad_y.dtype != x.dtype:
        grad_y = grad_y.to(x.dtype)
    grad_y = grad_y.contiguous()       # e.g. the expanded gradient of a sum
    # Gradients in torch's allocator (see _cuda_forward); the parameters' in the factors'
    # dtype, as the kernels return them.
    gS1, gS2, gb = _grad_block(S1s, S2s, has_bias, need_weights, shared=saved is not None)
    grads = (x.new_empty(x.shape) if need_x else None, gS1, gS2, gb)
    tensors = (grad_y, x, hidden, S1s, S2s, U1s, U2s) + grads
    fwd = None if saved is None else saved.get("trace")
    key = trace = None
    index = x.get_device()
    if fwd is not None and _traceable(index):
        key = (fwd[0], has_bias, need_x, need_weights, grad_y.dtype,
               None if hidden is None else hidden.dtype)
        trace = _bwd_traces.get(key)
    if trace is not None and fwd[1] is not None:
        # The forward replayed too: its temporaries are in its workspace, the last slot,
        # and it allocated this backward's workspace (unless another configuration's
        # smaller one).
        ws = None
        if trace.workspace_bytes <= fwd[5]:
            ws_address = fwd[4]
        else:
            ws = x.new_empty((trace.workspace_bytes,), dtype=torch.uint8)
            ws_address = ws.data_ptr()
        trace.replay(_slots(tensors) + [fwd[2]], ws_address,
                     torch._C._cuda_getCurrentRawStream(index))
    else:
        rec = None
        if key is not None and fwd[3] is not None and key not in _bwd_traces:
            # A recorded forward: its temporaries become offsets in its workspace slot.
            regions = _regions(tensors) + [(p, n, len(tensors), off) for p, n, off in fwd[3]]
            rec = _trace.record(regions, len(tensors) + 1)
        with cuda_stream(x.device):
            args = [_cuda_view(t) for t in (grad_y, x, hidden, S1s, S2s, U1s, U2s)]
            with rec if rec is not None else nullcontext():
                _cuda.sketched_linear_backward(*args, has_bias, need_x, need_weights,
                                               storage=storage,
                                               out=tuple(_cuda_view(t) for t in grads),
                                               saved=saved)
        if rec is not None:
            _remember(_bwd_traces, key, rec.trace)
            if rec.trace is not None:
                _bwd_recorded[fwd[0]] = max(_bwd_recorded.get(fwd[0], 0),
                                            _aligned(rec.trace.workspace_bytes))
    out = []
    for g, ref in zip(grads, (x, S1s, S2s, S2s)):
        if g is None:
            out.append(ref.new_empty(_EMPTY_SHAPE))
        else:
            out.append(g.to(ref.dtype) if g.dtype != ref.dtype else g)
    return tuple(out)


def _forward_impl(x, S1s, S2s, U1s, U2s, bias, saved=None):
    """Kernels of the forward; ``saved`` (a dict) collects what the CUDA backward reuses."""
    if _cuda_ok(x, S1s):   # GPU engineer: CUDA fast path (below the CPU path's helpers)
        return _cuda_forward(x, S1s, S2s, U1s, U2s, bias, saved)
    cdt = _compute_dtype(x.dtype)
    arrays, backend = _arrays(cdt, x, S1s, S2s, U1s, U2s, bias)
    y, hidden = backend.sketched_linear_forward(*arrays)
    y = to_tensor(y, like=x)
    return (y.to(x.dtype) if y.dtype != x.dtype else y), to_tensor(hidden, like=x)


def _backward_impl(grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x, need_weights,
                   saved=None):
    if _cuda_ok(x, S1s):   # GPU engineer: CUDA fast path
        return _cuda_backward(grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x,
                              need_weights, saved)
    cdt = _compute_dtype(x.dtype)
    arrays, backend = _arrays(cdt, grad_y, x, hidden, S1s, S2s, U1s, U2s)
    grads = backend.sketched_linear_backward(*arrays, has_bias, need_x, need_weights)
    out = []
    for g, ref in zip(grads, (x, S1s, S2s, S2s)):
        if g is None:
            out.append(ref.new_empty(_EMPTY_SHAPE))
            continue
        t = to_tensor(g, like=ref)
        out.append(t.to(ref.dtype) if t.dtype != ref.dtype else t)
    return tuple(out)


# ----------------------------------------------------------------------------- forward op
@torch.library.custom_op("sketchcore::sklinear_forward", mutates_args=())
def sklinear_forward(x: Tensor, S1s: Tensor, S2s: Tensor, U1s: Tensor, U2s: Tensor,
                     bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Sketched linear forward on 2-D ``x`` (batch, in); returns ``(y, hidden)``."""
    return _forward_impl(x, S1s, S2s, U1s, U2s, bias)


@sklinear_forward.register_fake
def _(x, S1s, S2s, U1s, U2s, bias):
    L, _, k = S1s.shape
    return (x.new_empty((x.shape[0], S2s.shape[2])),
            x.new_empty((x.shape[0], 2 * L * k), dtype=_compute_dtype(x.dtype)))


# ---------------------------------------------------------------------------- backward op
@torch.library.custom_op("sketchcore::sklinear_backward", mutates_args=())
def sklinear_backward(grad_y: Tensor, x: Tensor, hidden: Optional[Tensor], S1s: Tensor,
                      S2s: Tensor, U1s: Tensor, U2s: Tensor, has_bias: bool, need_x: bool,
                      need_weights: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of the sketched linear layer; unwanted ones are empty tensors."""
    return _backward_impl(grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x,
                          need_weights)


@sklinear_backward.register_fake
def _(grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x, need_weights):
    return (x.new_empty(x.shape if need_x else _EMPTY_SHAPE),
            S1s.new_empty(S1s.shape if need_weights else _EMPTY_SHAPE),
            S2s.new_empty(S2s.shape if need_weights else _EMPTY_SHAPE),
            S2s.new_empty((S2s.shape[2],) if has_bias else _EMPTY_SHAPE))


# ------------------------------------------------------------------------------- autograd
def _forward_setup(ctx, inputs, output):
    x, S1s, S2s, U1s, U2s, bias = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, S1s, S2s, U1s, U2s, output[1])


def _input_grads(ctx, grad_y, backward):
    if grad_y is None:
        return None, None, None, None, None, None
    x, S1s, S2s, U1s, U2s, hidden = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_x, need_w = need[0], need[1] or need[2]
    gx, g1, g2, gb = backward(grad_y, x, hidden, S1s, S2s, U1s, U2s,
                              ctx.has_bias and need[5], need_x, need_w)
    return (gx if need_x else None, g1 if need[1] else None, g2 if need[2] else None,
            None, None, gb if ctx.has_bias and need[5] else None)


def _forward_backward(ctx, grad_y, grad_hidden):
    return _input_grads(ctx, grad_y, torch.ops.sketchcore.sklinear_backward)


sklinear_forward.register_autograd(_forward_backward, setup_context=_forward_setup)


class _EagerSKLinear(torch.autograd.Function):
    """The forward op's eager twin: same kernels and formulas, without the dispatcher.

    Eager calls skip ``torch.library``'s Python dispatch layers (tens of microseconds per
    call, which dominate small layers); a backward that must itself be differentiable
    (``create_graph=True``) goes through the backward *op*, whose autograd is registered.
    Under ``torch.compile`` and for devices without kernels (meta) the ops are used.
    """

    # Old-style forward(ctx, ...): the setup_context style makes Function.apply bind
    # arguments through inspect.signature on every call (~20 us).
    @staticmethod
    def forward(ctx, x, S1s, S2s, U1s, U2s, bias):
        # On CUDA the forward's stacked factors (and 16-bit hidden state) go to the backward.
        ctx.kernel_saved = {} if x.is_cuda else None
        out = _forward_impl(x, S1s, S2s, U1s, U2s, bias, ctx.kernel_saved)
        _forward_setup(ctx, (x, S1s, S2s, U1s, U2s, bias), out)
        return out

    @staticmethod
    def backward(ctx, grad_y, grad_hidden):
        if torch.is_grad_enabled():
            backward = torch.ops.sketchcore.sklinear_backward
        else:
            saved = ctx.kernel_saved
            ctx.kernel_saved = None          # used once: free the intermediates with it

            def backward(*args):
                return _backward_impl(*args, saved=saved)
        return _input_grads(ctx, grad_y, backward)


def _apply(x, S1s, S2s, U1s, U2s, bias):
    """y = x @ W_eff + bias on validated tensors: the eager Function or the op."""
    if torch.compiler.is_compiling() or x.device.type not in ("cpu", "cuda"):
        return torch.ops.sketchcore.sklinear_forward(x, S1s, S2s, U1s, U2s, bias)[0]
    if not torch.is_grad_enabled() or not (
            x.requires_grad or S1s.requires_grad or S2s.requires_grad
            or (bias is not None and bias.requires_grad)):
        # Nothing to differentiate (inference, no_grad, frozen layer): the kernels alone.
        return _forward_impl(x, S1s, S2s, U1s, U2s, bias)[0]
    return _EagerSKLinear.apply(x, S1s, S2s, U1s, U2s, bias)[0]


def _backward_setup(ctx, inputs, output):
    grad_y, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x, need_w = inputs
    ctx.set_materialize_grads(False)
    ctx.flags = (has_bias, need_x, need_w)
    ctx.save_for_backward(grad_y, x, S1s, S2s, U1s, U2s)


def _backward_backward(ctx, a_x, a_1, a_2, a_b):
    """Derivative of the backward op, written with the two ops (so it is differentiable too).

    With c = 1/(2L) the backward op computes grad_x = c g W_eff^T, grad_S1s[i] =
    c x^T g U1s[i]^T, grad_S2s[i] = c (x U2s[i])^T g, grad_bias = sum_rows g. Given
    cotangents (a_x, a_1, a_2, a_b) of those four results:

    * d/dg = a_x W_eff + c x sum_i (a_1[i] U1s[i] + U2s[i] a_2[i]) + a_b
           = fwd(a_x; S1s, S2s) + fwd(x; a_1, a_2, bias=a_b);
    * d/dx = c g (sum_i a_1[i] U1s[i] + U2s[i] a_2[i])^T = bwd(g, x; a_1, a_2).grad_x,
      which already includes the path through ``hidden`` = x U2s;
    * d/dS1s, d/dS2s = bwd(g, a_x; S1s, S2s).grad_S1s, .grad_S2s (x replaced by a_x).
    """
    grad_y, x, S1s, S2s, U1s, U2s = ctx.saved_tensors
    has_bias, need_x, need_w = ctx.flags
    need = ctx.needs_input_grad
    if not need_x:
        a_x = None
    if not need_w:
        a_1 = a_2 = None
    if a_1 is not None or a_2 is not None:
        a_1 = torch.zeros_like(S1s) if a_1 is None else a_1
        a_2 = torch.zeros_like(S2s) if a_2 is None else a_2
    if not has_bias:
        a_b = None

    d_g = d_x = d_S1 = d_S2 = None
    if need[0]:
        parts = []
        if a_x is not None:
            parts.append(torch.ops.sketchcore.sklinear_forward(a_x, S1s, S2s, U1s, U2s, None)[0])
        if a_1 is not None:
            parts.append(torch.ops.sketchcore.sklinear_forward(x, a_1, a_2, U1s, U2s, a_b)[0])
        elif a_b is not None:
            parts.append(a_b.expand(grad_y.shape))
        if parts:
            d_g = parts[0]
            for p in parts[1:]:
                d_g = d_g + p
    if need[1] and a_1 is not None:
        d_x = torch.ops.sketchcore.sklinear_backward(
            grad_y, x, None, a_1, a_2, U1s, U2s, False, True, False)[0]
    if (need[3] or need[4]) and a_x is not None:
        _, d_S1, d_S2, _ = torch.ops.sketchcore.sklinear_backward(
            grad_y, a_x, None, S1s, S2s, U1s, U2s, False, False, True)
    return (d_g, d_x, None, d_S1 if need[3] else None, d_S2 if need[4] else None,
            None, None, None, None, None)


sklinear_backward.register_autograd(_backward_backward, setup_context=_backward_setup)


# ------------------------------------------------------------------------- public wrapper
def sketched_linear(x, S1s, S2s, U1s, U2s, bias=None):
    """``x @ W_eff + bias`` with autograd, for 2-D ``x``; see ``sketchcore_torch.nn.SKLinear``.

    Parameters
    ----------
    x : Tensor of shape (batch, in)
    S1s, U2s : Tensor of shape (L, in, k)
    S2s, U1s : Tensor of shape (L, k, out)
    bias : Tensor of shape (out,), optional

    Returns
    -------
    Tensor of shape (batch, out), dtype of ``x``.

    Raises
    ------
    ValueError
        Inconsistent shapes.
    TypeError
        The tensors do not share one floating dtype.
    """
    if x.dim() != 2 or S1s.dim() != 3 or x.shape[1] != S1s.shape[1]:
        raise ValueError(f"sketched_linear expects x of shape (batch, {S1s.shape[1]}) and "
                         f"S1s of shape (L, in, k), got x {tuple(x.shape)}, "
                         f"S1s {tuple(S1s.shape)}")
    L, n_in, k = S1s.shape
    n_out = S2s.shape[-1]
    if (S2s.shape != (L, k, n_out) or U1s.shape != (L, k, n_out)
            or U2s.shape != (L, n_in, k) or (bias is not None and bias.shape != (n_out,))):
        raise ValueError(
            f"inconsistent factor shapes: S1s {tuple(S1s.shape)}, S2s {tuple(S2s.shape)}, "
            f"U1s {tuple(U1s.shape)}, U2s {tuple(U2s.shape)}"
            + ("" if bias is None else f", bias {tuple(bias.shape)}"))
    dtype = x.dtype
    for name, t in (("S1s", S1s), ("S2s", S2s), ("U1s", U1s), ("U2s", U2s), ("bias", bias)):
        if t is not None and t.dtype != dtype:
            raise TypeError(f"sketched_linear: all tensors must share one dtype; x is {dtype} "
                            f"but {name} is {t.dtype}")
    if not dtype.is_floating_point:
        raise TypeError(f"sketched_linear: expected a floating dtype, got {dtype}")
    return _apply(x, S1s, S2s, U1s, U2s, bias)
