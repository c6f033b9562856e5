"""``SKLinear``: a linear layer whose weight is a sum of randomly sketched low-rank terms."""
import math
import warnings

import numpy as np
import torch
from torch import nn

from sketchcore import random as _random
from sketchcore._backend import check_size
from sketchcore_torch import _ops

__all__ = ["SKLinear"]

# Device types whose autocast state is consulted (the meta device has none).
_AUTOCAST_DEVICES = ("cpu", "cuda")


def _torch_seed():
    """A 64-bit seed drawn from torch's default generator.

    ``seed=None`` layers take their seed from here rather than from the OS, so
    ``torch.manual_seed`` makes a whole model reproducible, as it does for ``nn.Linear``.
    The seed is recorded on the layer either way.
    """
    hi, lo = torch.randint(0, 2 ** 32, (2,), dtype=torch.int64).tolist()
    return (hi << 32) | lo


def _sign_matrices(seed, num_terms, role, rows, cols, scale):
    """(num_terms, rows, cols) float64 array of +-scale from stream ("sklinear", term, role)."""
    out = np.empty((num_terms, rows, cols), dtype=np.float64)
    for i in range(num_terms):
        stream = _random.make_stream("sklinear", i, role)
        out[i] = _random.signs(seed, stream, 0, rows * cols, np.float64, scale).reshape(rows, cols)
    return out


def _uniform_matrix(seed, role, shape, bound):
    """Uniform(-bound, bound] entries from stream ("sklinear", 0, role), float64."""
    n = int(np.prod(shape))
    u = _random.uniform(seed, _random.make_stream("sklinear", 0, role), 0, n, np.float64)
    return ((2.0 * u - 1.0) * bound).reshape(shape)


class SKLinear(nn.Module):
    r"""Linear layer ``y = x @ W_eff + bias`` with a sketched weight.

    ``W_eff = 1/(2L) * sum_i (S1s[i] @ U1s[i] + U2s[i] @ S2s[i])`` (``W_eff`` has shape
    ``(in_features, out_features)``), where ``S1s``/``S2s`` are trained and ``U1s``/``U2s``
    are fixed random sign matrices with entries ``+-1/sqrt(low_rank)`` drawn from
    sketchcore's Philox streams ``("sklinear", i, 0)`` and ``("sklinear", i, 1)`` of ``seed``.
    At initialisation ``S1s[i] = W @ U1s[i].T`` and ``S2s[i] = U2s[i].T @ W`` with
    ``W = W_init.T``, so ``E[W_eff] = W`` over seeds.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of each input and output sample (positive integers).
    num_terms : int
        ``L``, number of sketched terms (positive).
    low_rank : int
        ``k``, rank of each term (positive; larger than ``min(in_features, out_features)``
        is legal but warns, as any configuration with more parameters than ``nn.Linear``).
    W_init : torch.Tensor of shape (out_features, in_features), optional
        Dense weight in ``nn.Linear``'s layout to sketch. Without it, ``W`` is drawn like
        ``nn.Linear``'s (Kaiming uniform, bound ``1/sqrt(in_features)``) from ``seed``.
    bias : bool, default True
        Learn an additive bias (initialised uniform in ``+-1/sqrt(in_features)``).
    dtype : torch.dtype, optional
        Parameter dtype (default: torch's default dtype). Half precision is stored as such
        and computed in float32.
    device : torch.device or str, optional
    seed : int, optional
        64-bit seed of the sign matrices (and of ``W``/bias when drawn here). ``None`` draws
        one from torch's default generator, so ``torch.manual_seed`` reproduces the layer.
        Recorded as ``self.seed``.

    Attributes
    ----------
    S1s : Parameter of shape (num_terms, in_features, low_rank)
    S2s : Parameter of shape (num_terms, low_rank, out_features)
    U1s : buffer of shape (num_terms, low_rank, out_features)
    U2s : buffer of shape (num_terms, in_features, low_rank)
    bias : Parameter of shape (out_features,) or None

    Notes
    -----
    On CUDA the forward and backward are a handful of kernel launches each. The first call
    of a configuration (shapes, dtypes, which gradients) records them; later eager calls
    replay the recording from C with the new tensors' addresses, so little Python runs per
    call (``SKETCHCORE_TRACE=0`` turns this off); addresses that come back, as torch's
    allocator hands a training loop the same blocks each step, are captured into a CUDA
    graph and launched as one (``SKETCHCORE_TRACE_GRAPHS=0`` keeps plain replays). For the
    last microseconds, ``torch.cuda.make_graphed_callables(layer, (x,))`` captures the
    layer into CUDA graphs (the kernels run on torch's current stream and take their
    temporaries from torch's allocator, so capture needs nothing else).

    Raises
    ------
    TypeError
        A size is not an integer, ``dtype`` is not floating point, ``W_init`` is not a tensor.
    ValueError
        A size is not positive, ``W_init`` has the wrong shape or non-finite entries.
    """

    __constants__ = ["in_features", "out_features", "num_terms", "low_rank"]

    def __init__(self, in_features, out_features, num_terms, low_rank, W_init=None,
                 bias=True, dtype=None, device=None, seed=None):
        super().__init__()
        self.in_features = check_size(in_features, "in_features")
        self.out_features = check_size(out_features, "out_features")
        self.num_terms = check_size(num_terms, "num_terms")
        self.low_rank = check_size(low_rank, "low_rank")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.seed = _torch_seed() if seed is None else _random.resolve_seed(seed)
        n_in, n_out, L, k = self.in_features, self.out_features, self.num_terms, self.low_rank

        dense = n_in * n_out + (n_out if bias else 0)
        sketched = L * k * (n_in + n_out) + (n_out if bias else 0)
        if sketched > dense:
            warnings.warn(
                f"SKLinear({n_in}, {n_out}, num_terms={L}, low_rank={k}) has {sketched:,} "
                f"parameters, more than the {dense:,} of nn.Linear({n_in}, {n_out}); "
                f"lower num_terms or low_rank to compress", UserWarning, stacklevel=2)

        # Factors are formed in float64 on the host (exact signs, one rounding at the end).
        W = self._initial_weight(W_init)                     # (in, out), float64
        scale = 1.0 / math.sqrt(k)
        U1 = _sign_matrices(self.seed, L, 0, k, n_out, scale)    # (L, k, out)
        U2 = _sign_matrices(self.seed, L, 1, n_in, k, scale)     # (L, in, k)
        W_t, U1_t, U2_t = (torch.from_numpy(a) for a in (W, U1, U2))
        S1 = torch.matmul(W_t, U1_t.transpose(1, 2))          # (L, in, k)
        S2 = torch.matmul(U2_t.transpose(1, 2), W_t)          # (L, k, out)

        factory = {"dtype": dtype, "device": device}
        self.S1s = nn.Parameter(S1.to(**factory))
        self.S2s = nn.Parameter(S2.to(**factory))
        self.register_buffer("U1s", U1_t.to(**factory))
        self.register_buffer("U2s", U2_t.to(**factory))
        if bias:
            b = _uniform_matrix(self.seed, 3, (n_out,), 1.0 / math.sqrt(n_in))
            self.bias = nn.Parameter(torch.from_numpy(b).to(**factory))
        else:
            self.register_parameter("bias", None)

    def _initial_weight(self, W_init):
        """Dense W of shape (in, out) in float64: ``W_init.T`` or a Kaiming-uniform draw."""
        n_in, n_out = self.in_features, self.out_features
        if W_init is None:
            # nn.Linear: kaiming_uniform_(a=sqrt(5)) on (out, in) == U(-1/sqrt(in), 1/sqrt(in)).
            return _uniform_matrix(self.seed, 2, (n_out, n_in), 1.0 / math.sqrt(n_in)).T
        if not isinstance(W_init, torch.Tensor):
            raise TypeError(f"W_init must be a torch.Tensor of shape (out_features, "
                            f"in_features) = ({n_out}, {n_in}), got {type(W_init).__name__}")
        if tuple(W_init.shape) != (n_out, n_in):
            raise ValueError(f"W_init must have shape (out_features, in_features) = "
                             f"({n_out}, {n_in}) like nn.Linear.weight, got {tuple(W_init.shape)}")
        if not W_init.dtype.is_floating_point:
            raise TypeError(f"W_init must be floating point, got {W_init.dtype}")
        W = W_init.detach().to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(W).all()):
            raise ValueError("W_init must not contain NaN or infinity")
        return W.numpy().T

    @classmethod
    def from_linear(cls, linear, num_terms, low_rank, seed=None):
        """Sketch a trained ``nn.Linear`` (its weight, bias, dtype and device are kept).

        Parameters
        ----------
        linear : torch.nn.Linear
        num_terms, low_rank : int
        seed : int, optional

        Returns
        -------
        SKLinear
            ``E[W_eff] = linear.weight.T`` over seeds; the bias is copied exactly.

        Raises
        ------
        TypeError
            ``linear`` is not an ``nn.Linear``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects a torch.nn.Linear, got {type(linear).__name__}")
        weight = linear.weight
        layer = cls(linear.in_features, linear.out_features, num_terms, low_rank,
                    W_init=weight, bias=linear.bias is not None, dtype=weight.dtype,
                    device=weight.device, seed=seed)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    def effective_weight(self):
        """Dense ``W_eff`` of shape (in_features, out_features), differentiable."""
        scale = 1.0 / (2 * self.num_terms)
        return scale * (torch.matmul(self.S1s, self.U1s) + torch.matmul(self.U2s, self.S2s)).sum(0)

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor of shape (..., in_features)

        Returns
        -------
        torch.Tensor of shape (..., out_features)

        Raises
        ------
        ValueError
            Last dimension of ``x`` is not ``in_features``.
        TypeError
            ``x``'s dtype differs from the parameters' (outside autocast).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SKLinear expects a torch.Tensor input, got {type(x).__name__}")
        shape = x.shape
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"SKLinear expected input of shape (..., {self.in_features}) "
                             f"(last dimension = in_features), got shape {tuple(shape)}")
        S1s = self.S1s
        param_dtype = S1s.dtype
        out_dtype = None
        device_type = x.device.type
        if (device_type in _AUTOCAST_DEVICES and param_dtype == torch.float32
                and torch.is_autocast_enabled(device_type)):
            # Like nn.Linear under autocast the result has the autocast dtype, but the
            # kernels compute from the float32 parameters (more accurate, no weight casts).
            out_dtype = torch.get_autocast_dtype(device_type)
            x = x.to(param_dtype)
        elif x.dtype != param_dtype:
            raise TypeError(f"SKLinear: input dtype {x.dtype} does not match the layer's "
                            f"parameter dtype {param_dtype}; cast the input or the layer "
                            f"(layer.to({x.dtype})), or run under torch.autocast")
        flat = len(shape) != 2
        if flat:
            x = x.reshape(-1, self.in_features)
        # Shapes and dtypes are the layer's own, so the op is called without re-checking.
        y = _ops._apply(x, S1s, self.S2s, self.U1s, self.U2s, self.bias)
        if flat:
            y = y.reshape(*shape[:-1], self.out_features)
        return y if out_dtype is None else y.to(out_dtype)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"num_terms={self.num_terms}, low_rank={self.low_rank}, "
                f"bias={self.bias is not None}, seed={self.seed}")
