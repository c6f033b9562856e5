"""Helpers of the torch tests: the tutorial's example scripts (examples/) and a short training loop."""
import importlib
import math
import pathlib
import sys

import torch

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def example(name):
    """Import a tutorial example module from examples/."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def train_steps(model, x, target, steps=25, lr=1e-2, loss_fn=None):
    """Adam steps on one fixed batch; asserts every loss is finite and returns the losses."""
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses), losses
    return losses
