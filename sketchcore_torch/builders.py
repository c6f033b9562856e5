"""Reusable sketched blocks from the user's tutorial, as tested library classes.

Each class keeps the tutorial's constructor arguments, defaults and submodule names (so
state_dict keys such as ``network.0.S1s`` match the tutorial's models), and adds argument
validation and an optional ``seed`` that makes every SKLinear's sign matrices reproducible
(per-layer seeds derived with :func:`sketchcore_torch.convert.layer_seeds`).

Classes
-------
StandardMLP               dense baseline: Linear -> ReLU -> Dropout per hidden layer, Linear head
SketchedMLP               the same with SKLinear layers and the tutorial's terms/rank schedules
SketchedResidualBlock     two SKLinear + BatchNorm1d, identity or SKLinear shortcut
SketchedMultiHeadAttention  SKLinear Q/K/V/output projections, returns (output, weights)
SketchedTransformerBlock  post-norm attention + sketched feed-forward
"""
import numbers

import torch
import torch.nn as nn

from sketchcore_torch.convert import layer_seeds

__all__ = ["StandardMLP", "SketchedMLP", "default_schedules", "SketchedResidualBlock",
           "SketchedMultiHeadAttention", "SketchedTransformerBlock"]


def _sklinear(*args, **kwargs):
    # Late import: the package __init__ imports this module, and SKLinear lives in pr.nn.
    from sketchcore_torch.nn import SKLinear
    return SKLinear(*args, **kwargs)


def _pos_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _dims(values, name):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of positive integers, "
                        f"got {type(values).__name__}")
    values = list(values)
    return [_pos_int(v, f"{name}[{i}]") for i, v in enumerate(values)]


def _dropout(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1], got {p!r}")
    return float(p)


class _SeedSource:
    """Hands out per-layer seeds: all None without a base seed, else derived ones in order."""

    def __init__(self, seed):
        self.seed = seed
        self.count = 0

    def __call__(self):
        if self.seed is None:
            return None
        out = layer_seeds(self.seed, 1, offset=self.count)[0]
        self.count += 1
        return out


class StandardMLP(nn.Module):
    """Dense multilayer perceptron (the tutorial's baseline).

    ``Linear -> ReLU -> Dropout`` for each hidden width, then a ``Linear`` head, in
    ``self.network`` (an ``nn.Sequential``).

    Parameters
    ----------
    input_dim : int
        Input features.
    hidden_dims : sequence of int
        Hidden widths (may be empty: a single linear layer).
    output_dim : int
        Output features (e.g. number of classes).
    dropout : float, default 0.1
        Dropout probability after each hidden activation.

    Shapes
    ------
    input (..., input_dim) -> output (..., output_dim).

    Raises
    ------
    TypeError, ValueError
        Non-integer or non-positive sizes, dropout outside [0, 1].
    """

    def __init__(self, input_dim, hidden_dims, output_dim, dropout=0.1):
        super().__init__()
        input_dim = _pos_int(input_dim, "input_dim")
        hidden_dims = _dims(hidden_dims, "hidden_dims")
        output_dim = _pos_int(output_dim, "output_dim")
        dropout = _dropout(dropout)
        layers = []
        current = input_dim
        for hidden in hidden_dims:
            layers.extend([nn.Linear(current, hidden), nn.ReLU(), nn.Dropout(dropout)])
            current = hidden
        layers.append(nn.Linear(current, output_dim))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        """(..., input_dim) -> (..., output_dim)."""
        return self.network(x)


def default_schedules(input_dim, hidden_dims):
    """The tutorial's default ``(num_terms_schedule, low_rank_schedule)`` for SketchedMLP.

    ``num_terms = [8] * len(hidden_dims) + [4]``;
    ``base_rank = min(64, min(input_dim, hidden_dims[0]) // 4)``,
    ``low_rank = [base_rank // (i + 1) for i in range(len(hidden_dims))] + [16]``.
    For 784 -> [512, 256, 128] -> 10 that is terms ``[8, 8, 8, 4]``, ranks ``[64, 32, 21, 16]``.

    Parameters
    ----------
    input_dim : int
    hidden_dims : sequence of int, non-empty

    Returns
    -------
    (list of int, list of int)
        Both of length ``len(hidden_dims) + 1`` (the last entry is the output layer's).

    Raises
    ------
    ValueError
        ``hidden_dims`` is empty, or the formula yields a rank of 0 (dimensions below 4, or
        ``base_rank < len(hidden_dims)``): pass an explicit ``low_rank_schedule`` then.
    """
    input_dim = _pos_int(input_dim, "input_dim")
    hidden_dims = _dims(hidden_dims, "hidden_dims")
    if not hidden_dims:
        raise ValueError("the default schedules need at least one hidden layer "
                         "(hidden_dims is empty); pass explicit schedules")
    terms = [8] * len(hidden_dims) + [4]
    base_rank = min(64, min(input_dim, hidden_dims[0]) // 4)
    ranks = [base_rank // (i + 1) for i in range(len(hidden_dims))] + [16]
    if min(ranks) < 1:
        raise ValueError(f"the tutorial's default low_rank schedule gives {ranks} for "
                         f"input_dim={input_dim}, hidden_dims={hidden_dims} (base rank "
                         f"{base_rank}); a rank must be >= 1: pass low_rank_schedule")
    return terms, ranks


class SketchedMLP(nn.Module):
    """MLP whose every linear layer is an ``SKLinear`` (the tutorial's ``SketchedMLP``).

    ``SKLinear -> ReLU -> Dropout`` for each hidden width, then an ``SKLinear`` head, in
    ``self.network``. Layer ``i`` uses ``num_terms_schedule[i]`` terms and rank
    ``low_rank_schedule[i]``; the last entry of each schedule is the head's.

    Parameters
    ----------
    input_dim : int
    hidden_dims : sequence of int
        Hidden widths; must be non-empty when a schedule is left to its default.
    output_dim : int
    num_terms_schedule, low_rank_schedule : sequence of int, optional
        Length ``len(hidden_dims) + 1`` each. Defaults: :func:`default_schedules` (terms
        ``[8, ..., 8, 4]``, ranks ``base // (i + 1)`` then 16 with
        ``base = min(64, min(input_dim, hidden_dims[0]) // 4)``).
    dropout : float, default 0.1
    seed : int, optional
        Base seed for the SKLinear sign matrices (layer ``i`` gets derived seed ``i``); None
        lets each layer draw its own.

    Shapes
    ------
    input (..., input_dim) -> output (..., output_dim).

    Raises
    ------
    TypeError, ValueError
        Bad sizes, a schedule of the wrong length or with non-positive entries.

    Notes
    -----
    With the defaults, layers whose sketch is larger than the dense layer (such as the
    10-class head with rank 16) are legal and SKLinear warns about them.
    """

    def __init__(self, input_dim, hidden_dims, output_dim, num_terms_schedule=None,
                 low_rank_schedule=None, dropout=0.1, seed=None):
        super().__init__()
        input_dim = _pos_int(input_dim, "input_dim")
        hidden_dims = _dims(hidden_dims, "hidden_dims")
        output_dim = _pos_int(output_dim, "output_dim")
        dropout = _dropout(dropout)
        if num_terms_schedule is None or low_rank_schedule is None:
            default_terms, default_ranks = default_schedules(input_dim, hidden_dims)
        n_layers = len(hidden_dims) + 1
        if num_terms_schedule is None:
            num_terms_schedule = default_terms
        if low_rank_schedule is None:
            low_rank_schedule = default_ranks
        num_terms_schedule = _dims(num_terms_schedule, "num_terms_schedule")
        low_rank_schedule = _dims(low_rank_schedule, "low_rank_schedule")
        for sched, name in ((num_terms_schedule, "num_terms_schedule"),
                            (low_rank_schedule, "low_rank_schedule")):
            if len(sched) != n_layers:
                raise ValueError(f"{name} must have len(hidden_dims) + 1 = {n_layers} entries "
                                 f"(one per hidden layer, then the output layer), got "
                                 f"{len(sched)}: {sched}")
        self.num_terms_schedule = num_terms_schedule
        self.low_rank_schedule = low_rank_schedule
        next_seed = _SeedSource(seed)
        layers = []
        current = input_dim
        for i, hidden in enumerate(hidden_dims):
            layers.extend([
                _sklinear(current, hidden, num_terms=num_terms_schedule[i],
                          low_rank=low_rank_schedule[i], seed=next_seed()),
                nn.ReLU(),
                nn.Dropout(dropout),
            ])
            current = hidden
        layers.append(_sklinear(current, output_dim, num_terms=num_terms_schedule[-1],
                                low_rank=low_rank_schedule[-1], seed=next_seed()))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        """(..., input_dim) -> (..., output_dim)."""
        return self.network(x)


class SketchedResidualBlock(nn.Module):
    """Residual block with sketched linear maps (the tutorial's ``SketchedResidualBlock``).

    ``relu(main_path(x) + shortcut(x))`` with ``main_path = SKLinear -> BatchNorm1d -> ReLU ->
    SKLinear -> BatchNorm1d`` and ``shortcut`` the identity when ``in_features ==
    out_features``, else ``SKLinear(in_features, out_features, num_terms=2, low_rank=16)``.

    Parameters
    ----------
    in_features, out_features : int
    num_terms : int, default 4
    low_rank : int, default 32
    seed : int, optional
        Base seed for the block's SKLinear layers.

    Shapes
    ------
    input (batch, in_features) -> output (batch, out_features). BatchNorm1d needs a 2-D
    input with batch > 1 in training mode.

    Raises
    ------
    ValueError
        In ``forward``: input not 2-D or with the wrong number of features.
    """

    def __init__(self, in_features, out_features, num_terms=4, low_rank=32, seed=None):
        super().__init__()
        in_features = _pos_int(in_features, "in_features")
        out_features = _pos_int(out_features, "out_features")
        num_terms = _pos_int(num_terms, "num_terms")
        low_rank = _pos_int(low_rank, "low_rank")
        self.in_features, self.out_features = in_features, out_features
        next_seed = _SeedSource(seed)
        self.main_path = nn.Sequential(
            _sklinear(in_features, out_features, num_terms=num_terms, low_rank=low_rank,
                      seed=next_seed()),
            nn.BatchNorm1d(out_features),
            nn.ReLU(),
            _sklinear(out_features, out_features, num_terms=num_terms, low_rank=low_rank,
                      seed=next_seed()),
            nn.BatchNorm1d(out_features),
        )
        if in_features != out_features:
            self.shortcut = _sklinear(in_features, out_features, num_terms=2, low_rank=16,
                                      seed=next_seed())
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        """(batch, in_features) -> (batch, out_features)."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"SketchedResidualBlock expects input of shape (batch, "
                             f"{self.in_features}), got {tuple(x.shape)}")
        return self.relu(self.main_path(x) + self.shortcut(x))


class SketchedMultiHeadAttention(nn.Module):
    """Multi-head self-attention with SKLinear projections (the tutorial's version).

    Q, K, V and the output projection are ``SKLinear(d_model, d_model, num_terms,
    low_rank)``; scores are ``Q K^T / sqrt(d_k)`` per head, ``d_k = d_model // n_heads``.

    Parameters
    ----------
    d_model : int
        Embedding size; must be divisible by ``n_heads``.
    n_heads : int
    num_terms : int, default 6
    low_rank : int, default 48
    dropout : float, default 0.1
        Dropout on the attention weights.
    seed : int, optional
        Base seed for the four projections.

    Shapes
    ------
    ``forward(x, mask=None, key_padding_mask=None)``:

    - x: (batch, seq, d_model)
    - mask: any shape broadcastable to (batch, n_heads, seq, seq), e.g. (seq, seq) causal or
      (batch, 1, 1, seq); positions where ``mask == 0`` (or False) are not attended to.
    - key_padding_mask: (batch, seq); ``0``/False marks padding keys. It is the same as
      ``mask=key_padding_mask[:, None, None, :]`` and combines with ``mask``.
    - returns ``(output, attention_weights)`` of shapes (batch, seq, d_model) and
      (batch, n_heads, seq, seq) (the weights after dropout, as in the tutorial).

    A query whose keys are all masked attends uniformly (as with the tutorial's ``-1e9``
    fill); the fill is the dtype's most negative finite value so half precision works.

    Raises
    ------
    ValueError
        ``d_model`` not divisible by ``n_heads``; in ``forward``, ``x`` not 3-D with
        ``d_model`` features, or a mask that does not broadcast.
    """

    def __init__(self, d_model, n_heads, num_terms=6, low_rank=48, dropout=0.1, seed=None):
        super().__init__()
        d_model = _pos_int(d_model, "d_model")
        n_heads = _pos_int(n_heads, "n_heads")
        num_terms = _pos_int(num_terms, "num_terms")
        low_rank = _pos_int(low_rank, "low_rank")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        next_seed = _SeedSource(seed)

        def proj():
            return _sklinear(d_model, d_model, num_terms=num_terms, low_rank=low_rank,
                             seed=next_seed())

        self.query_proj = proj()
        self.key_proj = proj()
        self.value_proj = proj()
        self.output_proj = proj()
        self.dropout = nn.Dropout(_dropout(dropout))

    def forward(self, x, mask=None, key_padding_mask=None):
        """(batch, seq, d_model) -> ((batch, seq, d_model), (batch, n_heads, seq, seq))."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (batch, seq, {self.d_model}), "
                             f"got {tuple(x.shape)}")
        batch, seq, _ = x.shape
        keep = _combine_masks(mask, key_padding_mask, batch, self.n_heads, seq, x.device)

        def heads(t):
            return t.view(batch, seq, self.n_heads, self.d_k).transpose(1, 2)

        q = heads(self.query_proj(x))
        k = heads(self.key_proj(x))
        v = heads(self.value_proj(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / (self.d_k ** 0.5)
        if keep is not None:
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(weights, v).transpose(1, 2).contiguous()
        output = self.output_proj(context.view(batch, seq, self.d_model))
        return output, weights


def _combine_masks(mask, key_padding_mask, batch, n_heads, seq, device):
    """Boolean keep-mask broadcastable to (batch, n_heads, seq, seq), or None."""
    target = (batch, n_heads, seq, seq)
    keep = None
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
        try:
            torch.broadcast_shapes(tuple(mask.shape), target)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"(batch, n_heads, seq, seq) = {target}; for a (batch, seq) "
                             f"padding mask use key_padding_mask= or "
                             f"mask[:, None, None, :]") from None
        keep = (mask != 0).to(device)
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor):
            raise TypeError(f"key_padding_mask must be a tensor, "
                            f"got {type(key_padding_mask).__name__}")
        if tuple(key_padding_mask.shape) != (batch, seq):
            raise ValueError(f"key_padding_mask must have shape (batch, seq) = {(batch, seq)}, "
                             f"got {tuple(key_padding_mask.shape)}")
        pad_keep = (key_padding_mask != 0).to(device)[:, None, None, :]
        keep = pad_keep if keep is None else keep & pad_keep
    return keep


class SketchedTransformerBlock(nn.Module):
    """Post-norm transformer encoder block with sketched layers (the tutorial's version).

    ``x = norm1(x + dropout(attention(x)))``, then ``x = norm2(x + dropout(ff(x)))`` with
    ``ff = SKLinear(d_model, d_ff, 2 * num_terms, 2 * low_rank) -> ReLU -> Dropout ->
    SKLinear(d_ff, d_model, num_terms, low_rank)``.

    Parameters
    ----------
    d_model, n_heads, d_ff : int
    num_terms : int, default 6
    low_rank : int, default 48
    dropout : float, default 0.1
    seed : int, optional
        Base seed for all SKLinear layers of the block.

    Shapes
    ------
    ``forward(x, mask=None, key_padding_mask=None)``: x (batch, seq, d_model) -> (batch, seq,
    d_model); masks as in :class:`SketchedMultiHeadAttention`.

    Raises
    ------
    ValueError
        As :class:`SketchedMultiHeadAttention`.
    """

    def __init__(self, d_model, n_heads, d_ff, num_terms=6, low_rank=48, dropout=0.1,
                 seed=None):
        super().__init__()
        d_ff = _pos_int(d_ff, "d_ff")
        num_terms = _pos_int(num_terms, "num_terms")
        low_rank = _pos_int(low_rank, "low_rank")
        dropout = _dropout(dropout)
        next_seed = _SeedSource(seed)
        self.attention = SketchedMultiHeadAttention(d_model, n_heads, num_terms, low_rank,
                                                    dropout=dropout, seed=next_seed())
        self.norm1 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            _sklinear(d_model, d_ff, num_terms=num_terms * 2, low_rank=low_rank * 2,
                      seed=next_seed()),
            nn.ReLU(),
            nn.Dropout(dropout),
            _sklinear(d_ff, d_model, num_terms=num_terms, low_rank=low_rank, seed=next_seed()),
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None, key_padding_mask=None):
        """(batch, seq, d_model) -> (batch, seq, d_model)."""
        attn_out, _ = self.attention(x, mask, key_padding_mask)
        x = self.norm1(x + self.dropout(attn_out))
        ff_out = self.feed_forward(x)
        return self.norm2(x + self.dropout(ff_out))
