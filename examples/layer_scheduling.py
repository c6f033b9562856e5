"""Tutorial, "Layer-wise Learning Rate Scheduling": SketchedLayerWithScheduling.

A sketched layer that hands the optimizer separate parameter groups: the sketch factors
(``S1s``, ``S2s``, selected by name) and everything else (the bias). The demo trains a
two-layer model with those groups and a StepLR schedule.

Run: ``python examples/layer_scheduling.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr


class SketchedLayerWithScheduling(nn.Module):
    """Sketched layer with built-in learning rate scheduling."""

    def __init__(self, in_features, out_features, num_terms=8, low_rank=64):
        super().__init__()

        self.sketched_layer = pr.nn.SKLinear(in_features, out_features, num_terms, low_rank)

        # Separate learning rates for different parameter groups
        self.register_buffer('s_lr_multiplier', torch.tensor(1.0))
        self.register_buffer('u_lr_multiplier', torch.tensor(0.1))  # U matrices are fixed

    def get_parameter_groups(self, base_lr):
        """Get parameter groups with different learning rates."""

        s_params = [p for name, p in self.named_parameters() if 'S' in name]
        other_params = [p for name, p in self.named_parameters() if 'S' not in name]

        # fix: the tutorial's lr is `base_lr * self.s_lr_multiplier`, a 0-d tensor on the
        # module's device, where optimizers expect a float: on CUDA, Adam's default foreach
        # implementation refuses it ("lr as a Tensor is not supported for
        # capturable=False and foreach=True"). float() keeps the intended number.
        return [
            {'params': s_params, 'lr': base_lr * float(self.s_lr_multiplier)},
            {'params': other_params, 'lr': base_lr}
        ]

    def forward(self, x):
        return self.sketched_layer(x)


def main(quick=False):
    """Train two scheduled sketched layers with per-group learning rates and StepLR.

    Returns
    -------
    dict
        ``group_sizes`` (parameters per group of the first layer), ``group_lrs`` (initial
        and final lr of each group), ``losses`` (per step).
    """
    torch.manual_seed(0)
    in_features, hidden, out_features, steps = (64, 64, 8, 30) if quick else (256, 256, 16, 300)
    first = SketchedLayerWithScheduling(in_features, hidden, num_terms=2, low_rank=16)
    second = SketchedLayerWithScheduling(hidden, out_features, num_terms=1, low_rank=4)
    first.s_lr_multiplier.fill_(0.5)  # train the sketch factors of layer 1 at half the rate
    model = nn.Sequential(first, nn.ReLU(), second)

    base_lr = 1e-2
    groups = first.get_parameter_groups(base_lr) + second.get_parameter_groups(base_lr)
    optimizer = optim.Adam(groups)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=max(1, steps // 3), gamma=0.5)
    initial_lrs = [g['lr'] for g in optimizer.param_groups]

    group_sizes = [sum(p.numel() for p in g['params']) for g in first.get_parameter_groups(base_lr)]
    print(f"layer 1 groups: sketch factors {group_sizes[0]:,} parameters, "
          f"others {group_sizes[1]:,}; lrs {initial_lrs}")

    X = torch.randn(256, in_features)
    teacher = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                            nn.Linear(hidden, out_features))
    with torch.no_grad():
        Y = teacher(X)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    final_lrs = [g['lr'] for g in optimizer.param_groups]
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; final lrs {final_lrs}")
    return {"group_sizes": group_sizes, "group_lrs": list(zip(initial_lrs, final_lrs)),
            "losses": losses}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
