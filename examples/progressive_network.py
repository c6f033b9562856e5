"""Tutorial, "Progressive Training Strategy": ProgressiveSketchedNetwork.

A network that starts with few terms and a small rank and grows its sketches in phases
(1/3, 2/3 and all of each layer's configured terms and rank). The demo trains each phase on
the tutorial's synthetic data set, advancing between phases.

Run: ``python examples/progressive_network.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr

from mlp_comparison import create_synthetic_dataset


def effective_weight(layer):
    """Dense weight (in_features, out_features) an SKLinear represents:
    ``W_eff = 1/(2L) * sum_i (S1s[i] @ U1s[i] + U2s[i] @ S2s[i])``."""
    terms = torch.matmul(layer.S1s, layer.U1s) + torch.matmul(layer.U2s, layer.S2s)
    return terms.sum(0) / (2 * layer.num_terms)


class ProgressiveSketchedNetwork(nn.Module):
    """Network that progressively increases sketch complexity during training."""

    def __init__(self, layer_configs, num_classes):
        super().__init__()

        self.layer_configs = layer_configs
        self.num_classes = num_classes
        self.current_phase = 0
        self.max_phases = 3

        # Initialize with minimal complexity
        self.build_network()

    def build_network(self):
        """Build network for current training phase."""

        layers = []
        phase_multiplier = (self.current_phase + 1) / self.max_phases

        for i, config in enumerate(self.layer_configs):
            # Scale parameters based on training phase
            num_terms = max(2, int(config['num_terms'] * phase_multiplier))
            low_rank = max(16, int(config['low_rank'] * phase_multiplier))

            layer = pr.nn.SKLinear(
                config['in_features'],
                config['out_features'],
                num_terms=num_terms,
                low_rank=low_rank
            )

            layers.extend([layer, nn.ReLU(), nn.Dropout(0.1)])

        # Output layer
        layers.append(pr.nn.SKLinear(
            self.layer_configs[-1]['out_features'],
            self.num_classes,
            num_terms=2, low_rank=16
        ))

        self.network = nn.Sequential(*layers)

    def advance_phase(self):
        """Move to next training phase with increased complexity."""

        if self.current_phase < self.max_phases - 1:
            old_network = self.network
            old_state = self.network.state_dict()
            self.current_phase += 1
            self.build_network()

            # fix: build_network() creates the new layers on the default device and dtype;
            # put them where the old network was, or a model on the GPU breaks.
            reference = old_network[0].S1s
            self.network.to(device=reference.device, dtype=reference.dtype)

            # Transfer compatible parameters
            new_state = self.network.state_dict()
            for key in old_state:
                if key in new_state and old_state[key].shape == new_state[key].shape:
                    new_state[key] = old_state[key]

            self.network.load_state_dict(new_state)

            # fix: the shape-matched copy above only carries over the layers whose sketch
            # did not grow (biases and the fixed-size output layer); every grown layer would
            # restart from a random weight, throwing away the previous phases' training.
            # Initialise each grown layer from the old layer's effective weight instead
            # (W_init takes nn.Linear's (out, in) layout), with its bias copied.
            with torch.no_grad():
                for index, (old, new) in enumerate(zip(old_network, self.network)):
                    if isinstance(old, pr.nn.SKLinear) and old.S1s.shape != new.S1s.shape:
                        grown = pr.nn.SKLinear(
                            old.in_features, old.out_features,
                            num_terms=new.num_terms, low_rank=new.low_rank,
                            W_init=effective_weight(old).T, bias=old.bias is not None,
                            dtype=reference.dtype, device=reference.device)
                        if old.bias is not None:
                            grown.bias.copy_(old.bias)
                        grown.train(old.training)
                        self.network[index] = grown
            self.network.train(old_network.training)

            print(f"Advanced to phase {self.current_phase + 1}/{self.max_phases}")
            return True

        return False

    def forward(self, x):
        return self.network(x)


def evaluate(model, X, y):
    model.eval()
    with torch.no_grad():
        accuracy = (model(X).argmax(1) == y).float().mean().item()
    model.train()
    return accuracy


def main(quick=False):
    """Train a ProgressiveSketchedNetwork through its three phases.

    Returns
    -------
    dict
        ``phases``: per phase (terms, ranks) of the hidden layers, its parameter count, its
        accuracy right after advancing (before any training in the phase) and at its end;
        ``losses`` per step.
    """
    torch.manual_seed(0)
    layer_configs = [
        {'in_features': 784, 'out_features': 256, 'num_terms': 6, 'low_rank': 48},
        {'in_features': 256, 'out_features': 128, 'num_terms': 6, 'low_rank': 48},
    ]
    n_samples, steps_per_phase = (400, 10) if quick else (3000, 150)
    X, y = create_synthetic_dataset(n_samples=n_samples, input_dim=784, n_classes=10)
    split = int(0.8 * len(X))
    model = ProgressiveSketchedNetwork(layer_configs, num_classes=10)
    criterion = nn.CrossEntropyLoss()
    losses, phases = [], []
    advanced = True
    while advanced:
        # The old parameters were replaced: a new optimizer for the new ones.
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
        start_accuracy = evaluate(model, X[split:], y[split:])
        model.train()
        for step in range(steps_per_phase):
            idx = torch.randint(0, split, (64,))
            optimizer.zero_grad()
            loss = criterion(model(X[idx]), y[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        hidden = [m for m in model.network if isinstance(m, pr.nn.SKLinear)][:-1]
        phases.append({"terms": [m.num_terms for m in hidden],
                       "ranks": [m.low_rank for m in hidden],
                       "params": sum(p.numel() for p in model.parameters()),
                       "start_accuracy": start_accuracy,
                       "end_accuracy": evaluate(model, X[split:], y[split:])})
        print(f"phase {model.current_phase + 1}: {phases[-1]}")
        advanced = model.advance_phase()
    return {"phases": phases, "losses": losses}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
