"""Tests of ``sketchcore_torch.builders``: the tutorial's blocks as library classes."""
import warnings

import pytest
import torch
import torch.nn as nn

import sketchcore_torch as pr
from _tutorial import example, train_steps
from sketchcore_torch.builders import (SketchedMLP, SketchedMultiHeadAttention,
                                       SketchedResidualBlock, SketchedTransformerBlock,
                                       StandardMLP, default_schedules)

SKLinear = pr.nn.SKLinear

# The tutorial's defaults knowingly build layers larger than their dense twins.
pytestmark = [pytest.mark.filterwarnings("ignore:SKLinear.*more than:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def sklinears(module):
    return [m for m in module.modules() if isinstance(m, SKLinear)]


# ------------------------------------------------------------------------------------ MLPs
def test_default_schedules_match_the_tutorial_formula():
    assert default_schedules(784, [512, 256, 128]) == ([8, 8, 8, 4], [64, 32, 21, 16])
    # base = min(64, min(100, 40) // 4) = 10
    assert default_schedules(100, [40, 30]) == ([8, 8, 4], [10, 5, 16])
    assert default_schedules(4096, [1024]) == ([8, 4], [64, 16])


@pytest.mark.parametrize("input_dim, hidden, match", [
    (4, [4, 4], "gives \\[1, 0, 16\\]"),
    (784, [], "at least one hidden layer"),
    (3, [512], "gives \\[0, 16\\]"),
])
def test_default_schedules_refuse_zero_ranks(input_dim, hidden, match):
    with pytest.raises(ValueError, match=match):
        default_schedules(input_dim, hidden)
    with pytest.raises(ValueError, match=match):
        SketchedMLP(input_dim, hidden, 2)


def test_sketched_mlp_layers_follow_the_schedules():
    model = SketchedMLP(784, [512, 256, 128], 10, seed=0)
    layers = sklinears(model)
    assert [(m.in_features, m.out_features) for m in layers] == [
        (784, 512), (512, 256), (256, 128), (128, 10)]
    assert [m.num_terms for m in layers] == [8, 8, 8, 4]
    assert [m.low_rank for m in layers] == [64, 32, 21, 16]
    custom = SketchedMLP(20, [16], 3, num_terms_schedule=(2, 1), low_rank_schedule=[4, 2])
    assert [(m.num_terms, m.low_rank) for m in sklinears(custom)] == [(2, 4), (1, 2)]


def test_parameter_counts():
    std = StandardMLP(784, [512, 256, 128], 10)
    assert sum(p.numel() for p in std.parameters()) == (
        784 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10)
    sk = SketchedMLP(784, [512, 256, 128], 10)
    expected = sum(L * k * (i + o) + o for (i, o), L, k in zip(
        [(784, 512), (512, 256), (256, 128), (128, 10)], [8, 8, 8, 4], [64, 32, 21, 16]))
    assert sum(p.numel() for p in sk.parameters()) == expected == 934410


def test_state_dict_keys_match_the_tutorial_classes():
    tutorial = example("mlp_comparison")
    torch.manual_seed(0)
    ours, theirs = SketchedMLP(64, [32, 16], 5), tutorial.SketchedMLP(64, [32, 16], 5)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(6, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert {k: v.shape for k, v in StandardMLP(64, [32], 5).state_dict().items()} == \
        {k: v.shape for k, v in tutorial.StandardMLP(64, [32], 5).state_dict().items()}


@pytest.mark.parametrize("schedules, match", [
    (dict(num_terms_schedule=[8, 8]),
     "num_terms_schedule must have len\\(hidden_dims\\) \\+ 1 = 3"),
    (dict(low_rank_schedule=[4, 4, 4, 4]), "low_rank_schedule must have .* got 4"),
    (dict(num_terms_schedule=[1, 0, 1]), "num_terms_schedule\\[1\\] must be a positive"),
])
def test_schedule_validation(schedules, match):
    with pytest.raises(ValueError, match=match):
        SketchedMLP(64, [32, 16], 5, **schedules)


@pytest.mark.parametrize("cls", [StandardMLP, SketchedMLP])
@pytest.mark.parametrize("args, exc", [
    ((0, [8], 2), ValueError), ((8, [8], 2.0), TypeError), ((8, "8", 2), TypeError),
    ((8, [8, -1], 2), ValueError),
])
def test_mlp_size_validation(cls, args, exc):
    with pytest.raises(exc):
        cls(*args)


def test_mlp_dropout_validation():
    with pytest.raises(ValueError, match="dropout"):
        StandardMLP(8, [8], 2, dropout=1.5)


def test_mlp_shapes_and_training():
    torch.manual_seed(0)
    model = SketchedMLP(48, [32, 16], 4, num_terms_schedule=[2, 2, 1],
                        low_rank_schedule=[8, 4, 2])
    assert model(torch.randn(3, 5, 48)).shape == (3, 5, 4)
    assert model(torch.randn(48)).shape == (4,)
    x, y = torch.randn(32, 48), torch.randint(0, 4, (32,))
    losses = train_steps(model, x, y)
    assert losses[-1] < 0.5 * losses[0]


def test_seeded_builders_are_reproducible_with_distinct_layer_seeds():
    a = SketchedMLP(64, [32, 16], 5, seed=3)
    b = SketchedMLP(64, [32, 16], 5, seed=3)
    seeds = [m.seed for m in sklinears(a)]
    assert seeds == [m.seed for m in sklinears(b)] and len(set(seeds)) == len(seeds)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = SketchedMLP(64, [32, 16], 5, seed=4)
    assert seeds != [m.seed for m in sklinears(c)]
    block_seeds = [m.seed for m in sklinears(SketchedTransformerBlock(32, 4, 64, 1, 4, seed=3))]
    assert len(set(block_seeds)) == 6


# -------------------------------------------------------------------------------- residual
def test_residual_block_shortcuts_and_shapes():
    same = SketchedResidualBlock(32, 32, num_terms=2, low_rank=4)
    assert isinstance(same.shortcut, nn.Identity)
    grow = SketchedResidualBlock(32, 48, num_terms=2, low_rank=4)
    assert isinstance(grow.shortcut, SKLinear)
    assert (grow.shortcut.num_terms, grow.shortcut.low_rank) == (2, 16)
    out = grow(torch.randn(8, 32))
    assert out.shape == (8, 48) and (out >= 0).all()
    with pytest.raises(ValueError, match=r"shape \(batch, 32\), got \(8, 5, 32\)"):
        grow(torch.randn(8, 5, 32))
    with pytest.raises(ValueError, match=r"got \(8, 31\)"):
        grow(torch.randn(8, 31))


def test_residual_block_matches_tutorial_and_trains():
    tutorial = example("sketched_resnet")
    torch.manual_seed(0)
    ours = SketchedResidualBlock(32, 48, num_terms=2, low_rank=4)
    theirs = tutorial.SketchedResidualBlock(32, 48, num_terms=2, low_rank=4)
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(6, 32)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)

    torch.manual_seed(1)
    model = nn.Sequential(SketchedResidualBlock(32, 32, 2, 8), nn.Linear(32, 3))
    x, y = torch.randn(32, 32), torch.randint(0, 3, (32,))
    losses = train_steps(model, x, y)
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------- attention
def test_attention_shapes_and_weights():
    torch.manual_seed(0)
    attn = SketchedMultiHeadAttention(32, 4, num_terms=2, low_rank=8).eval()
    x = torch.randn(3, 7, 32)
    out, weights = attn(x)
    assert out.shape == (3, 7, 32) and weights.shape == (3, 4, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 7))


def test_attention_reference_math():
    # The block computes softmax(Q K^T / sqrt(d_k)) V per head with Q = x Wq_eff + bq, etc.
    torch.manual_seed(0)
    attn = SketchedMultiHeadAttention(16, 2, num_terms=1, low_rank=4, dropout=0.0).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)

    def dense(layer, t):
        w = (torch.matmul(layer.S1s, layer.U1s) + torch.matmul(layer.U2s, layer.S2s)).sum(0)
        return t @ (w / (2 * layer.num_terms)) + layer.bias

    def heads(t):
        return t.view(2, 5, 2, 8).transpose(1, 2)

    q, k, v = (heads(dense(p, x)) for p in (attn.query_proj, attn.key_proj, attn.value_proj))
    w = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    expected = dense(attn.output_proj, (w @ v).transpose(1, 2).reshape(2, 5, 16))
    out, weights = attn(x)
    torch.testing.assert_close(weights, w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_attention_masks():
    torch.manual_seed(0)
    attn = SketchedMultiHeadAttention(32, 4, num_terms=2, low_rank=8).eval()
    x = torch.randn(2, 6, 32)
    causal = torch.tril(torch.ones(6, 6))
    _, w = attn(x, mask=causal)
    assert (w[..., torch.triu(torch.ones(6, 6), 1).bool()] == 0).all()
    assert (w[..., 0, 0] == 1).all()
    _, w_bool = attn(x, mask=causal.bool())
    torch.testing.assert_close(w_bool, w, rtol=0, atol=0)

    pad = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out_pad, w_pad = attn(x, key_padding_mask=pad)
    assert (w_pad[0, :, :, 4:] == 0).all() and (w_pad[1] > 0).all()
    out_same, _ = attn(x, mask=pad[:, None, None, :])
    torch.testing.assert_close(out_same, out_pad, rtol=0, atol=0)
    # Padded keys do not influence the output.
    x2 = x.clone()
    x2[0, 4:] = torch.randn(2, 32)
    out2, _ = attn(x2, key_padding_mask=pad)
    torch.testing.assert_close(out2[0, :4], out_pad[0, :4], rtol=1e-6, atol=1e-6)
    # Both masks combine.
    _, w_both = attn(x, mask=causal, key_padding_mask=pad)
    assert (w_both[0, :, 5, 4:] == 0).all() and (w_both[..., 0, 1:] == 0).all()


def test_attention_matches_tutorial_with_tutorial_masks():
    tutorial = example("attention_transformer")
    torch.manual_seed(0)
    ours = SketchedMultiHeadAttention(32, 4, num_terms=2, low_rank=8).eval()
    theirs = tutorial.SketchedMultiHeadAttention(32, 4, num_terms=2, low_rank=8).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 32)
    for mask in (None, torch.tril(torch.ones(6, 6)),
                 torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6])[:, None, None, :]):
        (o1, w1), (o2, w2) = ours(x, mask), theirs(x, mask)
        torch.testing.assert_close(o1, o2, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(w1, w2, rtol=1e-6, atol=1e-6)


def test_attention_under_bfloat16_autocast_with_mask():
    attn = SketchedMultiHeadAttention(32, 4, num_terms=2, low_rank=8).eval()
    x = torch.randn(2, 6, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, w = attn(x, mask=torch.tril(torch.ones(6, 6)))
    assert torch.isfinite(out.float()).all()
    assert (w[..., torch.triu(torch.ones(6, 6), 1).bool()] == 0).all()


def test_attention_errors():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by n_heads \(4\)"):
        SketchedMultiHeadAttention(30, 4)
    attn = SketchedMultiHeadAttention(32, 4, num_terms=1, low_rank=4)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 32\), got \(6, 32\)"):
        attn(torch.randn(6, 32))
    with pytest.raises(ValueError, match="does not broadcast"):
        attn(torch.randn(3, 6, 32), mask=torch.ones(3, 6))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, seq\)"):
        attn(torch.randn(3, 6, 32), key_padding_mask=torch.ones(6, 3))
    with pytest.raises(TypeError, match="mask must be a tensor"):
        attn(torch.randn(3, 6, 32), mask=[[1] * 6] * 6)


# ----------------------------------------------------------------------------- transformer
def test_transformer_block_matches_tutorial_and_trains():
    tutorial = example("attention_transformer")
    torch.manual_seed(0)
    ours = SketchedTransformerBlock(32, 4, 64, num_terms=2, low_rank=8)
    theirs = tutorial.SketchedTransformerBlock(32, 4, 64, num_terms=2, low_rank=8)
    assert [m.num_terms for m in sklinears(ours.feed_forward)] == [4, 2]
    assert [m.low_rank for m in sklinears(ours.feed_forward)] == [16, 8]
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(2, 6, 32)
    mask = torch.tril(torch.ones(6, 6))
    torch.testing.assert_close(ours(x, mask), theirs(x, mask), rtol=1e-6, atol=1e-6)
    assert ours(x, key_padding_mask=torch.ones(2, 6)).shape == (2, 6, 32)

    torch.manual_seed(1)
    model = SketchedTransformerBlock(32, 4, 64, num_terms=2, low_rank=8)
    x, target = torch.randn(4, 6, 32), torch.randn(4, 6, 32)
    losses = train_steps(model, x, target, loss_fn=nn.functional.mse_loss)
    assert losses[-1] < 0.8 * losses[0]


def test_builders_reachable_from_package():
    assert pr.builders.SketchedMLP is SketchedMLP
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pr.builders.SketchedMLP(64, [32], 4, num_terms_schedule=[1, 1],
                                low_rank_schedule=[4, 1])
