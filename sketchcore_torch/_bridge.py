"""Zero-copy bridge between torch tensors and the array types sketchcore's kernels take.

CPU tensors become NumPy arrays that share their memory (``Tensor.numpy``); CUDA tensors
become CuPy arrays through DLPack, exported on torch's *current* CUDA stream so that work
already queued by torch is ordered before whatever the kernels launch on that stream.
Nothing here copies: strides (non-contiguous, transposed views) travel with the data, and
the kernels' own input validation decides whether a contiguous copy is needed.
"""
import warnings

import numpy as np
import torch

__all__ = ["to_array", "to_tensor", "cuda_stream"]


def to_array(t):
    """View a tensor as a NumPy (CPU) or CuPy (CUDA) array without copying.

    Parameters
    ----------
    t : torch.Tensor
        Any strides; autograd history is ignored (the view is of ``t.detach()``).

    Returns
    -------
    numpy.ndarray or cupy.ndarray
        Same shape, strides and dtype as ``t``, sharing its memory.

    Raises
    ------
    TypeError
        ``t`` is not a tensor, or its dtype has no NumPy/CuPy equivalent (bfloat16):
        cast it first, e.g. ``t.float()``.
    ValueError
        ``t`` lives on a device other than CPU or CUDA.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"to_array expects a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bfloat16:
        raise TypeError("to_array: bfloat16 has no NumPy/CuPy dtype; cast the tensor to "
                        "float32 first (t.float())")
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.device.type == "cpu":
        return t.numpy()
    if t.device.type == "cuda":
        import cupy
        with cuda_stream(t.device):
            return cupy.from_dlpack(t)
    raise ValueError(f"to_array supports CPU and CUDA tensors, got device {t.device}")


def to_tensor(a, like=None):
    """Wrap a NumPy or CuPy array as a torch tensor without copying.

    Parameters
    ----------
    a : numpy.ndarray or cupy.ndarray
    like : torch.Tensor, optional
        When given, the result is checked to be on ``like``'s device (the kernels return
        arrays on the device of their inputs, so no transfer ever happens here).

    Returns
    -------
    torch.Tensor
        Shares ``a``'s memory, same shape, strides and dtype.

    Raises
    ------
    TypeError
        ``a`` is neither a NumPy nor a CuPy array.
    ValueError
        ``like`` is on another device than ``a``.
    """
    if isinstance(a, np.ndarray):
        if not a.flags.writeable:
            # torch.from_numpy warns on read-only arrays because tensors are writable;
            # a read-only result can only be a view of caller data, so copy it once.
            a = a.copy()
        out = torch.from_numpy(a)
    elif type(a).__module__.split(".", 1)[0] == "cupy":
        with cuda_stream(torch.device("cuda", a.device.id)):
            out = torch.from_dlpack(a)
    else:
        raise TypeError(f"to_tensor expects a NumPy or CuPy array, got {type(a).__name__}")
    if like is not None and out.device != like.device:
        raise ValueError(f"to_tensor: array is on {out.device}, expected {like.device}")
    return out


_external_streams = {}   # (device index, torch stream handle) -> cupy.cuda.ExternalStream


_torch_allocators = {}   # device index -> CuPy allocator drawing from torch's caching allocator


def _torch_allocator(index):
    """A CuPy allocator (size -> MemoryPointer) backed by torch's caching allocator.

    Inside the bridge, CuPy's temporaries come from torch's allocator rather than from
    CuPy's own pool: one pool for the whole process (no memory parked in a second cache
    that torch cannot reuse, and ``torch.cuda.memory_allocated`` sees it all), blocks
    tied to torch's current stream like torch's own temporaries, and CUDA-graph capture
    (``torch.cuda.graph``, ``make_graphed_callables``) takes them from the graph's private
    pool instead of memory CuPy would hand out again after the capture."""
    alloc = _torch_allocators.get(index)
    if alloc is None:
        import cupy
        device = torch.device("cuda", index)

        def alloc(size):
            block = torch.empty(size, dtype=torch.uint8, device=device)
            return cupy.cuda.MemoryPointer(
                cupy.cuda.UnownedMemory(block.data_ptr(), size, block, index), 0)

        _torch_allocators[index] = alloc
    return alloc


class cuda_stream:
    """Context manager: CuPy's current device and stream = torch's current ones on
    ``device``, and CuPy's allocator = torch's (see ``_torch_allocator``).

    Kernels launched by CuPy inside it are ordered with torch's work on that stream, which
    is what makes the DLPack exchange safe without extra synchronisation. Entered twice per
    layer call, so it keeps to the cheap calls: torch's raw stream handle rather than a
    ``torch.cuda.Stream`` object (6 us), and no device switch when CuPy is already on it.
    """

    __slots__ = ("device", "_prev_device", "_stream", "_alloc")

    def __init__(self, device):
        self.device = torch.device(device)
        self._prev_device = None
        self._stream = None
        self._alloc = None

    def __enter__(self):
        import cupy
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        current = cupy.cuda.runtime.getDevice()
        if current != index:
            cupy.cuda.runtime.setDevice(index)
            self._prev_device = current
        handle = torch._C._cuda_getCurrentRawStream(index)
        stream = _external_streams.get((index, handle))
        if stream is None:
            # One CuPy wrapper per torch stream (creating one costs tens of microseconds).
            # CuPy 14 deprecates ExternalStream in favour of Stream.from_external, which wants
            # an object speaking the CUDA stream protocol; a raw handle is what torch gives
            # cheaply, so the wrapper stays, without a warning per new torch stream.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                stream = cupy.cuda.ExternalStream(handle, index)
            _external_streams[(index, handle)] = stream
        stream.__enter__()
        self._stream = stream
        self._alloc = cupy.cuda.using_allocator(_torch_allocator(index))
        self._alloc.__enter__()
        return stream

    def __exit__(self, *exc):
        import cupy
        self._alloc.__exit__(*exc)
        self._alloc = None
        self._stream.__exit__(*exc)
        self._stream = None
        if self._prev_device is not None:
            cupy.cuda.runtime.setDevice(self._prev_device)
            self._prev_device = None
        return False
