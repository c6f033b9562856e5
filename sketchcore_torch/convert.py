"""Put sketched layers into an existing model: ``sketch_model`` and its parameter report.

``sketch_model`` walks a model, picks its ``nn.Linear`` layers by qualified name, and swaps
each for an :class:`~sketchcore_torch.nn.SKLinear` initialised from the dense weight through
``SKLinear.from_linear`` (so the sketched layer's effective weight is an unbiased estimate of
the dense one). It returns a :class:`SketchReport` with per-layer parameter counts before and
after; ``print(report)`` shows it as a table.

Example
-------
>>> import torch.nn as nn
>>> import sketchcore_torch as pr
>>> model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
>>> report = pr.convert.sketch_model(model, num_terms=2, low_rank=32, seed=0)
>>> [row.status for row in report.layers]
['sketched', 'skipped: larger']
"""
import copy
import fnmatch
import numbers
import re
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch.nn as nn

from sketchcore._backend import check_size
from sketchcore.random import make_stream, random_words, resolve_seed

__all__ = ["LayerReport", "SketchReport", "sketch_model", "layer_seeds", "sketched_param_count"]

# Role of the "user" stream that derives per-layer seeds from one seed. Fixed forever:
# changing it would change every seeded conversion.
_SEED_ROLE = 1


def layer_seeds(seed, count, offset=0):
    """Distinct, reproducible 64-bit seeds for ``count`` layers, derived from one seed.

    Seed ``j`` is two Philox words of stream ``make_stream("user", term=offset + j, role=1)``
    under key ``seed``: a pure function of ``(seed, offset + j)``, so a layer's seed does not
    depend on how many other layers are converted.

    Parameters
    ----------
    seed : int
        Base seed in ``[0, 2**64)``.
    count : int
        How many seeds, ``count >= 0``.
    offset : int, default 0
        Index of the first seed.

    Returns
    -------
    list of int
        ``count`` integers in ``[0, 2**64)``.

    Raises
    ------
    TypeError, ValueError
        ``seed``, ``count`` or ``offset`` is not a non-negative integer of the right size.
    """
    if seed is None:
        raise TypeError("seed must be an integer to derive layer seeds, got None")
    seed = resolve_seed(seed)
    count = check_size(count, "count", minimum=0)
    offset = check_size(offset, "offset", minimum=0)
    seeds = []
    for j in range(count):
        lo, hi = random_words(seed, make_stream("user", term=offset + j, role=_SEED_ROLE), 0, 2)
        seeds.append(int(lo) | (int(hi) << 32))
    return seeds


def sketched_param_count(in_features, out_features, num_terms, low_rank, bias=True):
    """Number of trainable parameters of ``SKLinear(in, out, num_terms, low_rank)``.

    ``S1s`` has ``num_terms * in_features * low_rank`` entries, ``S2s``
    ``num_terms * low_rank * out_features``, plus ``out_features`` for the bias.
    (The sign matrices ``U1s``, ``U2s`` are buffers, not parameters.)

    Returns
    -------
    int
    """
    return num_terms * low_rank * (in_features + out_features) + (out_features if bias else 0)


@dataclass(frozen=True)
class LayerReport:
    """What ``sketch_model`` did with one ``nn.Linear`` layer.

    Attributes
    ----------
    name : str
        Qualified module name (as in ``model.named_modules()``).
    in_features, out_features : int
        Layer size.
    num_terms, low_rank : int
        Sketch size requested for this layer.
    params_before : int
        Parameters of the dense layer (weight + bias).
    params_after : int
        Parameters of the layer now in the model (equal to ``params_before`` when skipped).
    status : str
        ``"sketched"``, ``"sketched (forced, larger)"``, ``"skipped: excluded"``,
        ``"skipped: not included"``, ``"skipped: min_features"`` or ``"skipped: larger"``.
    seed : int or None
        The SKLinear's seed (None when skipped).
    """

    name: str
    in_features: int
    out_features: int
    num_terms: int
    low_rank: int
    params_before: int
    params_after: int
    status: str
    seed: Optional[int] = None

    @property
    def replaced(self):
        """True when the layer was swapped for an SKLinear."""
        return self.status.startswith("sketched")

    @property
    def ratio(self):
        """``params_after / params_before``."""
        return self.params_after / self.params_before if self.params_before else float("nan")


@dataclass
class SketchReport:
    """Result of :func:`sketch_model`: per-layer rows and whole-model totals.

    Attributes
    ----------
    layers : list of LayerReport
        One row per ``nn.Linear`` found, in ``named_modules`` order.
    model_params_before, model_params_after : int
        Trainable-or-not parameters of the whole model (shared parameters counted once).
    seed : int
        Base seed the per-layer seeds were derived from (see :func:`layer_seeds`).
    model : nn.Module
        The converted model (the input itself when ``inplace=True``, a copy otherwise).
    """

    layers: List[LayerReport]
    model_params_before: int
    model_params_after: int
    seed: int
    model: nn.Module = field(repr=False, compare=False)

    @property
    def replaced(self):
        """Rows of the layers that were swapped."""
        return [row for row in self.layers if row.replaced]

    @property
    def skipped(self):
        """Rows of the layers left dense."""
        return [row for row in self.layers if not row.replaced]

    @property
    def linear_params_before(self):
        """Parameters of all ``nn.Linear`` layers found, before conversion."""
        return sum(row.params_before for row in self.layers)

    @property
    def linear_params_after(self):
        """Parameters of the same layers after conversion."""
        return sum(row.params_after for row in self.layers)

    @property
    def reduction(self):
        """Fraction of the model's parameters removed (negative when it grew)."""
        if not self.model_params_before:
            return 0.0
        return 1.0 - self.model_params_after / self.model_params_before

    def __str__(self):
        header = ("layer", "in", "out", "terms", "rank", "before", "after", "ratio", "status")
        rows = [(r.name or "(model)", str(r.in_features), str(r.out_features), str(r.num_terms),
                 str(r.low_rank), f"{r.params_before:,}", f"{r.params_after:,}",
                 f"{r.ratio:.3f}", r.status) for r in self.layers]
        lin_ratio = (self.linear_params_after / self.linear_params_before
                     if self.linear_params_before else float("nan"))
        rows.append(("linear layers", "", "", "", "", f"{self.linear_params_before:,}",
                     f"{self.linear_params_after:,}", f"{lin_ratio:.3f}",
                     f"{len(self.replaced)}/{len(self.layers)} sketched"))
        mod_ratio = (self.model_params_after / self.model_params_before
                     if self.model_params_before else float("nan"))
        rows.append(("whole model", "", "", "", "", f"{self.model_params_before:,}",
                     f"{self.model_params_after:,}", f"{mod_ratio:.3f}",
                     f"reduction {100 * self.reduction:.1f}%"))
        widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]
        numeric = {1, 2, 3, 4, 5, 6, 7}

        def fmt(cells):
            return "  ".join(cell.rjust(w) if c in numeric else cell.ljust(w)
                             for c, (cell, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        body = [fmt(r) for r in rows[:-2]]
        return "\n".join([fmt(header), rule, *body, rule, fmt(rows[-2]), fmt(rows[-1]),
                          f"(seed {self.seed})"])


def sketch_model(model, num_terms, low_rank, include=None, exclude=None, min_features=1,
                 seed=None, inplace=True, force=False):
    """Replace ``nn.Linear`` layers of ``model`` by ``SKLinear`` layers initialised from them.

    Each selected layer ``nn.Linear(in, out)`` with weight ``W`` of shape (out, in) becomes
    ``SKLinear.from_linear(layer, num_terms, low_rank, seed=s)``: same input/output shapes
    (..., in) -> (..., out), same dtype, device, bias and ``requires_grad``, effective weight an
    unbiased random estimate of ``W`` (exactly ``W`` only in expectation over seeds).

    Parameters
    ----------
    model : nn.Module
        The model. Only modules whose type is exactly ``nn.Linear`` are candidates: subclasses
        (such as ``nn.MultiheadAttention.out_proj``, whose parent reads its ``weight`` directly)
        are left alone. A module shared at several places is converted once and the same
        SKLinear is put at every place.
    num_terms, low_rank : int or callable
        Sketch size: a positive int, or ``f(name, linear) -> int`` to choose per layer.
    include : str, re.Pattern or sequence of them, optional
        Qualified names (``model.named_modules()`` names, e.g. ``"encoder.0.fc1"``) to
        convert; None converts every candidate. A ``str`` is an ``fnmatch`` glob matched
        case-sensitively against the whole name (``"encoder.*"``, ``"*.fc?"``); a string
        starting with ``"re:"`` or a compiled ``re.Pattern`` is a regular expression that must
        match the whole name (``re.fullmatch``). Every pattern must match at least one
        ``nn.Linear`` (typos are errors, not silent no-ops).
    exclude : same as ``include``, optional
        Names to leave dense; wins over ``include``.
    min_features : int, default 1
        Leave layers with ``min(in_features, out_features) < min_features`` dense.
    seed : int, optional
        Base seed; the layer that is the ``j``-th ``nn.Linear`` in ``named_modules`` order
        gets ``layer_seeds(seed, 1, offset=j)[0]``: distinct per layer, reproducible, and
        independent of ``include``/``exclude``. None draws a base seed from the OS (recorded
        in ``report.seed``).
    inplace : bool, default True
        Modify ``model`` itself; otherwise convert a deep copy (``report.model``).
    force : bool, default False
        Also convert layers whose sketched version has more parameters than the dense layer
        (``num_terms * low_rank * (in + out) > in * out``); by default they are skipped and
        reported as ``"skipped: larger"``.

    Returns
    -------
    SketchReport
        Per-layer before/after parameter counts and totals; ``print(report)`` shows a table;
        ``report.model`` is the converted model.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module``; a size, seed or flag has the wrong type; a pattern
        is neither ``str`` nor ``re.Pattern``.
    ValueError
        A non-positive size; an invalid regular expression; a pattern that matches no
        ``nn.Linear`` layer; ``model`` is itself an ``nn.Linear`` and ``inplace=True`` (a
        module cannot replace itself: use ``inplace=False`` or ``SKLinear.from_linear``).

    Warns
    -----
    UserWarning
        The model has no ``nn.Linear`` layer at all (the report is then empty).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_size_arg(num_terms, "num_terms")
    _check_size_arg(low_rank, "low_rank")
    min_features = check_size(min_features, "min_features", minimum=0)
    for flag, name in ((inplace, "inplace"), (force, "force")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    include_pats = _compile_patterns(include, "include")
    exclude_pats = _compile_patterns(exclude, "exclude")
    base_seed = resolve_seed(seed)
    if type(model) is nn.Linear and inplace:
        raise ValueError("model is itself an nn.Linear and cannot replace itself in place: "
                         "pass inplace=False (the SKLinear is report.model) or use "
                         "SKLinear.from_linear")

    # Imported here so that `import sketchcore_torch.convert` never forms an import cycle
    # with the package __init__ (which imports this module).
    from sketchcore_torch.nn import SKLinear

    if not inplace:
        model = copy.deepcopy(model)
    params_before = _count_params(model)

    linears = [(name, mod) for name, mod in model.named_modules() if type(mod) is nn.Linear]
    if not linears:
        warnings.warn(f"sketch_model: {type(model).__name__} has no nn.Linear layer; "
                      f"nothing was converted", UserWarning, stacklevel=2)
    for pats, arg in ((include_pats, "include"), (exclude_pats, "exclude")):
        for raw, pat in pats:
            if not any(_matches(pat, name) for name, _ in linears):
                names = ", ".join(repr(n) for n, _ in linears) or "none"
                raise ValueError(f"{arg} pattern {raw!r} matches no nn.Linear layer "
                                 f"(nn.Linear layers: {names})")

    rows, replacement = [], {}
    for index, (name, lin) in enumerate(linears):
        terms = _resolve_size(num_terms, "num_terms", name, lin)
        rank = _resolve_size(low_rank, "low_rank", name, lin)
        fin, fout = lin.in_features, lin.out_features
        has_bias = lin.bias is not None
        before = fin * fout + (fout if has_bias else 0)
        after = sketched_param_count(fin, fout, terms, rank, has_bias)
        status = None
        if exclude_pats and any(_matches(p, name) for _, p in exclude_pats):
            status = "skipped: excluded"
        elif include_pats and not any(_matches(p, name) for _, p in include_pats):
            status = "skipped: not included"
        elif min(fin, fout) < min_features:
            status = "skipped: min_features"
        elif after > before and not force:
            status = "skipped: larger"
        if status is not None:
            rows.append(LayerReport(name, fin, fout, terms, rank, before, before, status))
            continue
        layer_seed = layer_seeds(base_seed, 1, offset=index)[0]
        sk = SKLinear.from_linear(lin, terms, rank, seed=layer_seed)
        sk.train(lin.training)
        frozen = not lin.weight.requires_grad
        if frozen:
            sk.requires_grad_(False)
        elif has_bias and not lin.bias.requires_grad:
            sk.bias.requires_grad_(False)
        replacement[id(lin)] = sk
        status = "sketched" if after <= before else "sketched (forced, larger)"
        rows.append(LayerReport(name, fin, fout, terms, rank, before,
                                sum(p.numel() for p in sk.parameters()), status, layer_seed))

    if type(model) is nn.Linear:
        if id(model) in replacement:
            model = replacement[id(model)]
    else:
        # Every place a shared module sits: named_children() would skip repeats, so read
        # each parent's _modules directly (collected first, then modified).
        slots = [(parent, child_name) for parent in model.modules()
                 for child_name, child in parent._modules.items()
                 if child is not None and id(child) in replacement]
        for parent, child_name in slots:
            setattr(parent, child_name, replacement[id(getattr(parent, child_name))])

    return SketchReport(layers=rows, model_params_before=params_before,
                        model_params_after=_count_params(model), seed=base_seed, model=model)


def _count_params(module):
    return sum(p.numel() for p in module.parameters())


def _check_size_arg(value, name):
    if callable(value):
        return
    check_size(value, name, minimum=1)


def _resolve_size(value, name, layer_name, linear):
    if not callable(value):
        return int(value)
    got = value(layer_name, linear)
    if isinstance(got, bool) or not isinstance(got, numbers.Integral):
        raise TypeError(f"{name}({layer_name!r}, ...) must return an integer, "
                        f"got {type(got).__name__} {got!r}")
    if got < 1:
        raise ValueError(f"{name}({layer_name!r}, ...) must return a positive integer, got {got}")
    return int(got)


def _compile_patterns(patterns, arg):
    """Normalise include/exclude to a list of (as given, str glob | re.Pattern)."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    try:
        items = list(patterns)
    except TypeError:
        raise TypeError(f"{arg} must be a str, a re.Pattern or a sequence of them, "
                        f"got {type(patterns).__name__}") from None
    out = []
    for pat in items:
        if isinstance(pat, re.Pattern):
            out.append((pat, pat))
        elif isinstance(pat, str):
            if pat.startswith("re:"):
                try:
                    out.append((pat, re.compile(pat[3:])))
                except re.error as exc:
                    raise ValueError(f"{arg} pattern {pat!r} is not a valid regular "
                                     f"expression: {exc}") from None
            else:
                out.append((pat, pat))
        else:
            raise TypeError(f"{arg} patterns must be str or re.Pattern, "
                            f"got {type(pat).__name__} {pat!r}")
    return out


def _matches(pattern, name):
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    return fnmatch.fnmatchcase(name, pattern)
