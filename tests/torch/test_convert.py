"""Tests of ``sketchcore_torch.convert``: sketch_model, its report, layer seeds."""
import copy
import re
import warnings

import pytest
import torch
import torch.nn as nn

import sketchcore_torch as pr
from sketchcore_torch.convert import SketchReport, layer_seeds, sketch_model, sketched_param_count

SKLinear = pr.nn.SKLinear


# Small models on CI's two shared cores: single-threaded (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def w_eff(layer):
    """Dense (in, out) weight of an SKLinear, from its factors (DESIGN.md's formula)."""
    terms = torch.matmul(layer.S1s, layer.U1s) + torch.matmul(layer.U2s, layer.S2s)
    return terms.sum(0) / (2 * layer.num_terms)


class Net(nn.Module):
    """Linear layers at several depths plus modules that must not be touched."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3)
        self.encoder = nn.Sequential(nn.Linear(96, 80), nn.ReLU(), nn.Linear(80, 64))
        self.norm = nn.LayerNorm(64)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        h = self.norm(self.encoder(x))
        h, _ = self.attn(h[:, None], h[:, None], h[:, None])
        return self.head(h[:, 0])


def params(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------- replacement
def test_only_plain_linear_layers_are_replaced():
    model = Net()
    report = sketch_model(model, num_terms=1, low_rank=4, seed=0)
    assert report.model is model
    assert isinstance(model.encoder[0], SKLinear) and isinstance(model.encoder[2], SKLinear)
    assert isinstance(model.conv, nn.Conv2d) and isinstance(model.norm, nn.LayerNorm)
    # MultiheadAttention reads out_proj.weight directly: its Linear subclass stays.
    assert type(model.attn.out_proj) is not SKLinear
    # The 64 -> 3 head would grow (1*4*67 + 3 > 64*3 + 3): skipped and reported.
    assert isinstance(model.head, nn.Linear)
    assert [(r.name, r.status) for r in report.layers] == [
        ("encoder.0", "sketched"), ("encoder.2", "sketched"), ("head", "skipped: larger")]
    out = model(torch.randn(5, 96))
    assert out.shape == (5, 3) and torch.isfinite(out).all()


def test_converted_layer_equals_from_linear_with_reported_seed():
    model = Net()
    dense = copy.deepcopy(model.encoder[0])
    report = sketch_model(model, 2, 8, seed=123)
    ref = SKLinear.from_linear(dense, 2, 8, seed=report.layers[0].seed)
    got = model.encoder[0]
    for name in ("S1s", "S2s", "U1s", "U2s", "bias"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=0, atol=0)
    assert got.seed == report.layers[0].seed


def test_forward_is_x_weff_plus_bias_and_bias_is_copied():
    # What conversion guarantees exactly: each new layer computes x @ W_eff + b with the
    # dense layer's bias (W_eff is a random estimate of W, equal to it only on average).
    torch.manual_seed(1)
    lin = nn.Linear(40, 30).double()
    model = nn.Sequential(lin)
    bias = lin.bias.detach().clone()
    sketch_model(model, 2, 6, seed=5)
    layer = model[0]
    torch.testing.assert_close(layer.bias.detach(), bias, rtol=0, atol=0)
    x = torch.randn(7, 40, dtype=torch.float64)
    expected = x @ w_eff(layer) + layer.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_effective_weight_is_unbiased_over_seeds():
    # E[W_eff] = W over seeds. Each entry's sample mean over n seeds is checked against W
    # with a tolerance of 5 of its own standard errors (the sample std / sqrt(n)); 5 sigma
    # keeps a false alarm below ~1e-4 for the 24 entries even with estimated variances.
    torch.manual_seed(2)
    lin = nn.Linear(6, 4).double()
    W = lin.weight.detach().T
    n = 400
    samples = torch.stack([w_eff(sketch_model(lin, 1, 2, seed=s, inplace=False, force=True)
                                 .model).detach() for s in range(n)])
    mean, std = samples.mean(0), samples.std(0)
    assert torch.all(std > 0)
    assert torch.all((mean - W).abs() <= 5 * std / n ** 0.5), (mean - W) / (std / n ** 0.5)


def test_dtype_training_flag_and_frozen_weights_are_kept():
    lin = nn.Linear(64, 48).double().eval()
    lin.weight.requires_grad_(False)
    lin.bias.requires_grad_(False)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(48, 40, bias=False))
    sketch_model(model, 1, 4, seed=0)
    first, last = model[0], model[2]
    assert first.S1s.dtype == torch.float64 and not first.training
    assert not any(p.requires_grad for p in first.parameters())
    assert last.bias is None and last.training
    assert all(p.requires_grad for p in last.parameters())


def test_shared_module_is_converted_once_everywhere():
    shared = nn.Linear(64, 64)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    report = sketch_model(model, 1, 4, seed=0)
    assert isinstance(model[0], SKLinear) and model[0] is model[2]
    assert len(report.layers) == 1
    assert report.model_params_after == params(model[0])


def test_converted_model_trains():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))
    sketch_model(model, 1, 8, seed=0)
    x, y = torch.randn(32, 64), torch.randint(0, 4, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------------- report
def test_report_arithmetic():
    model = Net()
    before = params(model)
    report = sketch_model(model, num_terms=2, low_rank=4, seed=0)
    rows = {r.name: r for r in report.layers}
    r0 = rows["encoder.0"]
    assert r0.params_before == 96 * 80 + 80
    assert r0.params_after == 2 * 4 * (96 + 80) + 80 == sketched_param_count(96, 80, 2, 4)
    assert r0.params_after == params(model.encoder[0])
    assert r0.ratio == pytest.approx(r0.params_after / r0.params_before)
    assert rows["head"].params_after == rows["head"].params_before == 64 * 3 + 3
    assert report.model_params_before == before
    assert report.model_params_after == params(model)
    assert report.model_params_before - report.model_params_after == \
        report.linear_params_before - report.linear_params_after
    assert report.reduction == pytest.approx(1 - params(model) / before)
    assert [r.name for r in report.replaced] == ["encoder.0", "encoder.2"]
    assert [r.name for r in report.skipped] == ["head"]


def test_report_table_lists_layers_and_totals():
    report = sketch_model(Net(), num_terms=2, low_rank=4, seed=9)
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "in", "out", "terms", "rank", "before", "after",
                                "ratio", "status"]
    for row in report.layers:
        line = next(line for line in lines if line.startswith(row.name + " "))
        assert f"{row.params_before:,}" in line and f"{row.params_after:,}" in line
        assert row.status in line
    assert any(line.startswith("whole model") and f"{report.model_params_after:,}" in line
               for line in lines)
    assert "2/3 sketched" in text and "(seed 9)" in text


# ----------------------------------------------------------------------- include / exclude
@pytest.mark.parametrize("include, expected", [
    ("encoder.*", ["encoder.0", "encoder.2"]),
    ("*.2", ["encoder.2"]),
    (["encoder.0", "head"], ["encoder.0"]),          # head is still skipped: larger
    (re.compile(r"encoder\.\d"), ["encoder.0", "encoder.2"]),
    ("re:encoder\\.[02]", ["encoder.0", "encoder.2"]),
    ("re:.*0", ["encoder.0"]),
])
def test_include_patterns(include, expected):
    report = sketch_model(Net(), 1, 4, include=include, seed=0)
    assert [r.name for r in report.replaced] == expected
    statuses = {r.name: r.status for r in report.skipped}
    for name, status in statuses.items():
        assert status in ("skipped: not included", "skipped: larger")


def test_regex_must_match_whole_name():
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        sketch_model(Net(), 1, 4, include="re:encoder", seed=0)


def test_exclude_wins_over_include():
    report = sketch_model(Net(), 1, 4, include="encoder.*", exclude="*.2", seed=0)
    assert [r.name for r in report.replaced] == ["encoder.0"]
    assert {r.name: r.status for r in report.layers}["encoder.2"] == "skipped: excluded"


def test_min_features():
    report = sketch_model(Net(), 1, 4, min_features=70, seed=0)
    status = {r.name: r.status for r in report.layers}
    assert status == {"encoder.0": "sketched", "encoder.2": "skipped: min_features",
                      "head": "skipped: min_features"}


def test_force_converts_larger_layers_and_warns():
    model = Net()
    with pytest.warns(UserWarning, match="more than"):
        report = sketch_model(model, 1, 4, force=True, seed=0)
    row = {r.name: r for r in report.layers}["head"]
    assert row.status == "sketched (forced, larger)" and row.replaced
    assert row.params_after > row.params_before
    assert isinstance(model.head, SKLinear)


def test_callable_sizes_per_layer():
    report = sketch_model(Net(), num_terms=lambda name, lin: 1 if name == "head" else 2,
                          low_rank=lambda name, lin: max(1, lin.out_features // 16), seed=0)
    got = {r.name: (r.num_terms, r.low_rank) for r in report.layers}
    assert got == {"encoder.0": (2, 5), "encoder.2": (2, 4), "head": (1, 1)}
    assert report.model.head.low_rank == 1


# ----------------------------------------------------------------------------------- seeds
def test_layer_seeds_distinct_reproducible_and_positional():
    seeds = layer_seeds(7, 50)
    assert len(set(seeds)) == 50 and all(0 <= s < 2 ** 64 for s in seeds)
    assert layer_seeds(7, 50) == seeds
    assert layer_seeds(7, 10, offset=20) == seeds[20:30]
    assert layer_seeds(8, 50) != seeds


def test_same_seed_same_model_and_seed_independent_of_selection():
    a = sketch_model(Net(), 1, 4, seed=11)
    b = sketch_model(Net(), 1, 4, seed=11)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    seeds = [r.seed for r in a.replaced]
    assert len(set(seeds)) == len(seeds)
    only_second = sketch_model(Net(), 1, 4, include="encoder.2", seed=11)
    assert only_second.replaced[0].seed == seeds[1]
    other = sketch_model(Net(), 1, 4, seed=12)
    assert not torch.equal(other.model.encoder[0].U1s, a.model.encoder[0].U1s)


def test_seed_none_is_recorded_and_reproduces():
    report = sketch_model(Net(), 1, 4)
    again = sketch_model(Net(), 1, 4, seed=report.seed)
    assert torch.equal(report.model.encoder[0].U2s, again.model.encoder[0].U2s)


# --------------------------------------------------------------------------- copy / root
def test_inplace_false_leaves_the_input_alone():
    model = Net()
    state = copy.deepcopy(model.state_dict())
    report = sketch_model(model, 1, 4, seed=0, inplace=False)
    assert report.model is not model
    assert isinstance(model.encoder[0], nn.Linear)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert isinstance(report.model.encoder[0], SKLinear)


def test_root_linear():
    lin = nn.Linear(64, 64)
    with pytest.raises(ValueError, match="inplace=False"):
        sketch_model(lin, 1, 4, seed=0)
    report = sketch_model(lin, 1, 4, seed=0, inplace=False)
    assert isinstance(report.model, SKLinear) and isinstance(report, SketchReport)
    assert report.model_params_after == params(report.model)
    assert str(report).splitlines()[2].startswith("(model)")


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_terms=0), ValueError, "num_terms must be >= 1"),
    (dict(num_terms=2.0), TypeError, "num_terms must be an integer"),
    (dict(low_rank=True), TypeError, "low_rank must be an integer"),
    (dict(low_rank=-3), ValueError, "low_rank must be >= 1"),
    (dict(min_features=-1), ValueError, "min_features must be >= 0"),
    (dict(min_features="8"), TypeError, "min_features must be an integer"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(inplace="yes"), TypeError, "inplace must be a bool"),
    (dict(force=1), TypeError, "force must be a bool"),
    (dict(include=3), TypeError, "include must be a str"),
    (dict(exclude=[b"head"]), TypeError, "exclude patterns must be str or re.Pattern"),
    (dict(include="re:enc(oder"), ValueError, "not a valid regular expression"),
    (dict(include="decoder.*"), ValueError, r"include pattern 'decoder.\*' matches no"),
    (dict(exclude="Head"), ValueError, "exclude pattern 'Head' matches no"),
    (dict(num_terms=lambda n, m: 0), ValueError, "must return a positive integer"),
    (dict(low_rank=lambda n, m: "4"), TypeError, "must return an integer"),
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(num_terms=1, low_rank=4, seed=0)
    args.update(kwargs)
    model = Net()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(exc, match=match):
        sketch_model(model, **args)
    # Nothing was modified before the error.
    assert isinstance(model.encoder[0], nn.Linear)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sketch_model([nn.Linear(4, 4)], 1, 1)


def test_model_without_linear_layers_warns():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU())
    with pytest.warns(UserWarning, match="Sequential has no nn.Linear layer"):
        report = sketch_model(model, 1, 4, seed=0)
    assert report.layers == [] and report.model_params_after == report.model_params_before


def test_layer_seeds_errors():
    with pytest.raises(TypeError, match="seed must be an integer"):
        layer_seeds(None, 3)
    with pytest.raises(ValueError, match="count must be >= 0"):
        layer_seeds(1, -1)


def test_no_warning_when_nothing_grows():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sketch_model(Net(), 1, 4, seed=0)
