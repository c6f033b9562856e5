"""The user's tutorial models (examples/): build, train a few steps, run each ``main(quick=True)``.

Every example keeps the tutorial's code with ``import sketchcore_torch as pr``; these tests
check that each model trains (finite, decreasing losses), has the right output shapes, and
that the tutorial bugs fixed in the examples stay fixed.
"""
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import sketchcore_torch as pr
from _tutorial import EXAMPLES, example, train_steps

EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))

# The tutorial's models knowingly contain layers larger than their dense twins.
pytestmark = [pytest.mark.filterwarnings("ignore:SKLinear.*more than:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def finite(values):
    return all(math.isfinite(v) for v in values)


def mean(values):
    return sum(values) / len(values)


def test_every_example_is_covered():
    assert set(EXAMPLE_NAMES) == {
        "mlp_comparison", "sketched_cnn", "sketched_resnet", "attention_transformer",
        "adaptive_layer", "layer_scheduling", "progressive_network",
        "memory_efficient_trainer", "checkpointed_layer", "mixed_precision",
        "document_classifier"}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_examples_use_only_the_documented_import(name):
    # The tutorial's code with `import panther as pr` replaced by `import sketchcore_torch as pr`.
    source = (EXAMPLES / f"{name}.py").read_text()
    assert "import sketchcore_torch as pr" in source
    assert "panther" not in source
    assert "sketchcore_torch." not in source.replace("import sketchcore_torch as pr", "")
    compile(source, name, "exec")


# ------------------------------------------------------------------- models, a few steps each
def test_tutorial_mlps_train_on_a_fixed_batch():
    mod = example("mlp_comparison")
    torch.manual_seed(0)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    for cls in (mod.StandardMLP, mod.SketchedMLP):
        model = cls(784, [512, 256, 128], 10)
        assert model(x).shape == (64, 10)
        losses = train_steps(model, x, y, steps=10, lr=1e-3)
        assert losses[-1] < 0.8 * losses[0], (cls.__name__, losses)


def test_sketched_cnn_trains_on_a_fixed_batch():
    mod = example("sketched_cnn")
    torch.manual_seed(0)
    model = mod.SketchedCNN(num_classes=10)
    x, y = mod.synthetic_images(16)
    assert model(x).shape == (16, 10)
    losses = train_steps(model, x, y, steps=16, lr=1e-3)
    assert losses[-1] < 0.8 * losses[0], losses


def test_sketched_resnet_trains_on_a_fixed_batch():
    mod = example("sketched_resnet")
    torch.manual_seed(0)
    model = mod.SketchedResNet(input_dim=784, block_configs=mod.block_configs, num_classes=10)
    assert len(model.blocks) == 4
    assert isinstance(model.blocks[2].shortcut, pr.nn.SKLinear)     # 256 -> 512
    assert isinstance(model.blocks[3].shortcut, nn.Identity)         # 512 -> 512
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
    assert model(x).shape == (32, 10)
    losses = train_steps(model, x, y, steps=8, lr=1e-3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_transformer_block_trains_on_a_fixed_batch():
    mod = example("attention_transformer")
    torch.manual_seed(0)
    model = mod.SequenceClassifier(64, 8, 128, num_classes=4, num_terms=2, low_rank=16)
    x, y = mod.synthetic_sequences(16, 8, 64, 4)
    assert model(x).shape == (16, 4)
    losses = train_steps(model, x, y, steps=15, lr=1e-3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_document_classifier_trains_on_a_fixed_batch():
    mod = example("document_classifier")
    torch.manual_seed(0)
    model = mod.DocumentClassifier(vocab_size=100, embed_dim=64, hidden_dims=[64, 32],
                                   num_classes=3, max_seq_len=12)
    tokens, mask, labels = mod.synthetic_documents(8, 100, 3, max_len=12, min_len=4)

    def loss_fn(logits, target):
        return nn.functional.cross_entropy(logits, target)

    class WithMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, t):
            return self.inner(t, attention_mask=mask)

    losses = train_steps(WithMask(), tokens, labels, steps=20, lr=3e-3, loss_fn=loss_fn)
    assert losses[-1] < 0.5 * losses[0], losses


# --------------------------------------------------------------------- tutorial bugs, fixed
def test_document_classifier_mask_works_when_batch_differs_from_seq_len():
    # The tutorial passes the (batch, seq) mask straight to `scores.masked_fill(mask == 0)`
    # on (batch, heads, seq, seq) scores: a broadcasting error for batch != seq.
    mod = example("document_classifier")
    torch.manual_seed(0)
    model = mod.DocumentClassifier(vocab_size=50, embed_dim=32, hidden_dims=[32],
                                   num_classes=2, max_seq_len=10).eval()
    tokens, mask, _ = mod.synthetic_documents(3, 50, 2, max_len=10, min_len=3)
    logits = model(tokens, attention_mask=mask)
    assert logits.shape == (3, 2)
    with pytest.raises(RuntimeError):
        scores = torch.zeros(3, 8, 10, 10)
        scores.masked_fill(mask == 0, -1e9)      # what the tutorial's code did
    # With the fix, padding content cannot leak into the result.
    other = torch.where(mask.bool(), tokens, torch.full_like(tokens, 9))
    torch.testing.assert_close(model(other, attention_mask=mask), logits, rtol=0, atol=1e-6)


def test_checkpointed_first_layer_gets_gradients():
    mod = example("checkpointed_layer")
    torch.manual_seed(0)
    layer = mod.CheckpointedSketchedLayer(32, 16, num_terms=2, low_rank=4)
    x = torch.randn(8, 32)                       # does not require grad
    layer(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    plain = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    layer._forward_impl(x).sum().backward()
    for g, p in zip(plain, layer.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)


def test_scheduling_groups_have_float_learning_rates():
    mod = example("layer_scheduling")
    layer = mod.SketchedLayerWithScheduling(32, 16, num_terms=2, low_rank=4)
    layer.s_lr_multiplier.fill_(0.5)
    groups = layer.get_parameter_groups(0.1)
    assert [type(g["lr"]) for g in groups] == [float, float]
    assert groups[0]["lr"] == pytest.approx(0.05) and groups[1]["lr"] == 0.1
    names = {id(p): n for n, p in layer.named_parameters()}
    assert sorted(names[id(p)] for p in groups[0]["params"]) == \
        ["sketched_layer.S1s", "sketched_layer.S2s"]
    assert [names[id(p)] for p in groups[1]["params"]] == ["sketched_layer.bias"]


def test_adaptive_layer_keeps_learnt_weights_device_and_dtype():
    mod = example("adaptive_layer")
    torch.manual_seed(0)
    layer = mod.AdaptiveSketchedLayer(64, 32, base_terms=2, base_rank=8).double()
    old = layer.sketched_layer
    old_w = mod.effective_weight(old).detach()
    layer.input_variance.fill_(3.0)
    layer.adapt_parameters()
    new = layer.sketched_layer
    assert (new.num_terms, new.low_rank) == (4, 24) and new is not old
    assert new.S1s.dtype == torch.float64
    torch.testing.assert_close(new.bias, old.bias, rtol=0, atol=0)
    new_w = mod.effective_weight(new).detach()
    # A fresh random weight would be uncorrelated with the old one (cosine ~ 0).
    cosine = (new_w * old_w).sum() / (new_w.norm() * old_w.norm())
    assert cosine > 0.5, cosine
    # The running statistic carries no autograd history.
    x = torch.randn(16, 64, dtype=torch.float64, requires_grad=True)
    layer.train()
    layer(x * 2)
    assert not layer.input_variance.requires_grad


def test_progressive_network_transfers_weights_dtype_and_bias():
    mod = example("progressive_network")
    torch.manual_seed(0)
    configs = [{'in_features': 64, 'out_features': 48, 'num_terms': 6, 'low_rank': 48}]
    net = mod.ProgressiveSketchedNetwork(configs, num_classes=3).double()
    old_hidden, old_out = net.network[0], net.network[-1]
    old_w = mod.effective_weight(old_hidden).detach()
    assert net.advance_phase()
    hidden, out = net.network[0], net.network[-1]
    assert (hidden.num_terms, hidden.low_rank) == (4, 32)
    assert hidden.S1s.dtype == torch.float64 and out.S1s.dtype == torch.float64
    torch.testing.assert_close(hidden.bias, old_hidden.bias, rtol=0, atol=0)
    # The output layer keeps its size, so the tutorial's shape-matched copy carries it over.
    for name in ("S1s", "S2s", "U1s", "U2s", "bias"):
        torch.testing.assert_close(getattr(out, name), getattr(old_out, name), rtol=0, atol=0)
    new_w = mod.effective_weight(hidden).detach()
    cosine = (new_w * old_w).sum() / (new_w.norm() * old_w.norm())
    assert cosine > 0.5, cosine
    assert net.advance_phase() and not net.advance_phase()
    assert net.current_phase == 2


def test_memory_trainer_steps_on_the_last_partial_accumulation():
    mod = example("memory_efficient_trainer")
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(30, 8), torch.randint(0, 2, (30,)))
    loader = DataLoader(data, batch_size=10)             # 3 batches, accumulation 2
    model = nn.Linear(8, 2)
    trainer = mod.MemoryEfficientTrainer(model, loader, loader, torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    original = opt.step
    opt.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    loss = trainer.train_epoch(opt, nn.CrossEntropyLoss(), accumulation_steps=2)
    assert len(steps) == 2 and math.isfinite(loss)
    assert all(p.grad is None or (p.grad == 0).all() for p in model.parameters())
    assert trainer.memory_stats[0]["cpu_used"] > 0


# ------------------------------------------------------------------- each main(quick=True)
def test_main_mlp_comparison():
    r = example("mlp_comparison").main(quick=True)
    assert r["standard_params"] == 567434 and r["sketched_params"] == 934410
    assert 0 <= r["standard_acc"] <= 1 and 0 <= r["sketched_acc"] <= 1
    for key in ("standard_losses", "sketched_losses"):
        assert finite(r[key]) and r[key][-1] < r[key][0]


def test_main_sketched_cnn():
    r = example("sketched_cnn").main(quick=True)
    # Four steps: too few to promise a decrease (test_sketched_cnn_trains_on_a_fixed_batch).
    assert r["output_shape"] == (64, 10) and finite(r["losses"]) and len(r["losses"]) == 4


def test_main_sketched_resnet():
    r = example("sketched_resnet").main(quick=True)
    assert r["output_shape"] == (64, 10) and finite(r["losses"])
    assert mean(r["losses"][-2:]) < r["losses"][0]


def test_main_attention_transformer():
    r = example("attention_transformer").main(quick=True)
    assert r["output_shape"] == (4, 8, 64) and r["weights_shape"] == (4, 4, 8, 8)
    assert r["block_shape"] == (4, 8, 64)
    assert r["causal_upper_mass"] == 0.0
    assert finite(r["losses"]) and mean(r["losses"][-3:]) < mean(r["losses"][:3])


def test_main_adaptive_layer():
    r = example("adaptive_layer").main(quick=True)
    # Variance-4 inputs: the running estimate passes 2 before step 100, so the layer adapts
    # at step 100 (4 -> 6 terms, rank 8 -> 24) and again at 200.
    assert r["adaptations"] == [(100, 6, 24), (200, 8, 40)]
    assert r["input_variance"] > 2.0
    assert finite(r["losses"]) and r["losses"][-1] < 0.1 * r["losses"][0]


def test_main_layer_scheduling():
    r = example("layer_scheduling").main(quick=True)
    (s_init, s_final), (o_init, o_final) = r["group_lrs"][:2]
    assert s_init == pytest.approx(0.005) and o_init == pytest.approx(0.01)
    assert s_final == pytest.approx(0.005 * 0.5 ** 3) and o_final == pytest.approx(0.01 * 0.5 ** 3)
    assert r["group_sizes"] == [2 * 16 * (64 + 64), 64]
    assert finite(r["losses"]) and r["losses"][-1] < 0.5 * r["losses"][0]


def test_main_progressive_network():
    r = example("progressive_network").main(quick=True)
    phases = r["phases"]
    assert [p["terms"] for p in phases] == [[2, 2], [4, 4], [6, 6]]
    assert [p["ranks"] for p in phases] == [[16, 16], [32, 32], [48, 48]]
    assert phases[0]["params"] < phases[1]["params"] < phases[2]["params"]
    assert finite(r["losses"])


def test_main_memory_efficient_trainer():
    r = example("memory_efficient_trainer").main(quick=True)
    assert finite(r["train_losses"]) and math.isfinite(r["val_loss"])
    assert 0 <= r["val_accuracy"] <= 1 and r["memory_stats"]


def test_main_checkpointed_layer():
    r = example("checkpointed_layer").main(quick=True)
    assert r["max_grad_diff"] == 0.0
    assert finite(r["losses"]) and r["losses"][-1] < r["losses"][0]


def test_main_mixed_precision():
    r = example("mixed_precision").main(quick=True)
    expected = torch.float16 if torch.cuda.is_available() else torch.bfloat16
    assert r["output_dtype"] == expected
    assert finite(r["losses"]) and r["losses"][-1] < r["losses"][0]


def test_main_document_classifier():
    r = example("document_classifier").main(quick=True)
    assert r["tutorial_params"] > 0 and r["logits_shape"] == (64, 4)
    assert r["padding_invariance"] < 1e-5
    assert finite(r["losses"])


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_runs_as_a_script(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick"],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
