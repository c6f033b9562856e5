"""Tutorial, "Gradient Checkpointing for Large Models": CheckpointedSketchedLayer.

A sketched layer + ReLU whose activations are recomputed in the backward pass instead of
stored. The demo stacks such layers, trains the stack, and checks that the gradients equal
those of the same layers run without checkpointing.

Run: ``python examples/checkpointed_layer.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr

from torch.utils.checkpoint import checkpoint


class CheckpointedSketchedLayer(nn.Module):
    """Sketched layer with gradient checkpointing."""

    def __init__(self, in_features, out_features, num_terms=8, low_rank=64):
        super().__init__()

        self.sketched_layer = pr.nn.SKLinear(in_features, out_features, num_terms, low_rank)
        self.activation = nn.ReLU()

    def forward(self, x):
        # Use gradient checkpointing to save memory
        # fix: pass use_reentrant=False. The tutorial's call uses the reentrant variant
        # (torch's old default, which torch now asks to choose explicitly), which gives the
        # layer's parameters no gradient at all when the input does not require grad, as for
        # a network's first layer: backward then fails with "element 0 of tensors does not
        # require grad and does not have a grad_fn".
        return checkpoint(self._forward_impl, x, use_reentrant=False)

    def _forward_impl(self, x):
        return self.activation(self.sketched_layer(x))


def main(quick=False):
    """Train a stack of checkpointed sketched layers; compare gradients with no checkpointing.

    Returns
    -------
    dict
        ``max_grad_diff`` (largest difference between checkpointed and plain gradients),
        ``losses`` (per step).
    """
    torch.manual_seed(0)
    width, depth, steps = (128, 3, 5) if quick else (512, 4, 30)
    layers = [CheckpointedSketchedLayer(width, width, num_terms=2, low_rank=16)
              for _ in range(depth)]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    x = torch.randn(64, width)
    y = torch.randint(0, 10, (64,))
    criterion = nn.CrossEntropyLoss()

    # Gradients through checkpointing equal the plain ones (same math, recomputed).
    criterion(model(x), y).backward()
    ckpt_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h = x
    for layer in layers:
        h = layer._forward_impl(h)
    criterion(model[-1](h), y).backward()
    max_grad_diff = max((p.grad - g).abs().max().item()
                        for p, g in zip(model.parameters(), ckpt_grads))
    model.zero_grad()
    print(f"max |checkpointed grad - plain grad| = {max_grad_diff:.2e}")

    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return {"max_grad_diff": max_grad_diff, "losses": losses}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
