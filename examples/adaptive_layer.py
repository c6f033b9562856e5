"""Tutorial, "Dynamic Parameter Adjustment": AdaptiveSketchedLayer.

A sketched layer that tracks the variance of its inputs and, every 100 training steps, grows
its number of terms and rank when the variance is high. The demo feeds inputs of variance 4,
so the layer adapts during training; the optimizer is rebuilt when it does.

Run: ``python examples/adaptive_layer.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here, and its line continuation "\\" is "\".
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr


def effective_weight(layer):
    """Dense weight (in_features, out_features) an SKLinear represents:
    ``W_eff = 1/(2L) * sum_i (S1s[i] @ U1s[i] + U2s[i] @ S2s[i])``."""
    terms = torch.matmul(layer.S1s, layer.U1s) + torch.matmul(layer.U2s, layer.S2s)
    return terms.sum(0) / (2 * layer.num_terms)


class AdaptiveSketchedLayer(nn.Module):
    """Sketched layer that adapts parameters based on input statistics."""

    def __init__(self, in_features, out_features,
                 base_terms=4, base_rank=32, adaptation_rate=0.01):
        super().__init__()

        self.in_features = in_features
        self.out_features = out_features
        self.base_terms = base_terms
        self.base_rank = base_rank
        self.adaptation_rate = adaptation_rate

        # Current parameters
        self.current_terms = base_terms
        self.current_rank = base_rank

        # Create initial layer
        self.sketched_layer = pr.nn.SKLinear(
            in_features, out_features,
            num_terms=self.current_terms,
            low_rank=self.current_rank
        )

        # Statistics tracking
        self.register_buffer('input_variance', torch.ones(1))
        self.register_buffer('gradient_norm', torch.ones(1))
        self.update_counter = 0

    def forward(self, x):
        # Track input statistics
        if self.training:
            # fix: the running statistic is computed without autograd. In the tutorial it
            # keeps a reference to the graph of every batch it has seen (the buffer is an
            # autograd function of all past inputs), so memory grows step after step when
            # the input comes from trainable layers.
            with torch.no_grad():
                current_var = torch.var(x, dim=0).mean()
                self.input_variance = (1 - self.adaptation_rate) * self.input_variance + \
                    self.adaptation_rate * current_var

            self.update_counter += 1

            # Adapt parameters periodically
            if self.update_counter % 100 == 0:
                self.adapt_parameters()

        return self.sketched_layer(x)

    def adapt_parameters(self):
        """Adjust sketching parameters based on observed statistics."""

        # Simple adaptation rule: increase complexity if high variance
        if self.input_variance > 2.0 and self.current_terms < 16:
            new_terms = min(16, self.current_terms + 2)
            new_rank = min(128, self.current_rank + 16)

            # Create new layer with increased parameters
            # fix: the tutorial creates the new layer from a fresh random weight on the
            # default device and dtype, so everything learnt so far is lost (only the bias
            # was copied) and a model on the GPU breaks. Here it is initialised from the
            # old layer's effective weight (W_init takes nn.Linear's (out, in) layout), so it
            # represents the learnt map in expectation, on the old layer's device and dtype.
            old = self.sketched_layer
            new_layer = pr.nn.SKLinear(
                self.in_features, self.out_features,
                num_terms=new_terms, low_rank=new_rank,
                W_init=effective_weight(old).detach().T,
                bias=old.bias is not None,
                dtype=old.S1s.dtype, device=old.S1s.device
            )

            # Transfer learned parameters (simplified)
            with torch.no_grad():
                if self.sketched_layer.bias is not None:
                    new_layer.bias.copy_(self.sketched_layer.bias)

            self.sketched_layer = new_layer
            self.current_terms = new_terms
            self.current_rank = new_rank

            print(f"Adapted to terms={new_terms}, rank={new_rank}")


def main(quick=False):
    """Train an AdaptiveSketchedLayer on a linear regression task until it adapts.

    Returns
    -------
    dict
        ``adaptations`` (list of (step, terms, rank)), ``losses`` (per step),
        ``input_variance``, the final ``terms``/``rank``.
    """
    torch.manual_seed(0)
    in_features, out_features, steps = (64, 32, 220) if quick else (256, 128, 600)
    layer = AdaptiveSketchedLayer(in_features, out_features, base_terms=4, base_rank=8)
    target = torch.randn(in_features, out_features) / in_features ** 0.5

    # fix (usage): parameters created by adapt_parameters() are not in an optimizer built
    # before them, so they would never train; the loop rebuilds the optimizer whenever the
    # layer's configuration changes.
    def make_optimizer():
        return optim.Adam(layer.parameters(), lr=1e-2)

    optimizer = make_optimizer()
    config = (layer.current_terms, layer.current_rank)
    adaptations, losses = [], []
    layer.train()
    for step in range(steps):
        x = 2.0 * torch.randn(64, in_features)  # variance 4 > 2: the layer will adapt
        optimizer.zero_grad()
        output = layer(x)
        loss = ((output - x @ target) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (layer.current_terms, layer.current_rank) != config:
            config = (layer.current_terms, layer.current_rank)
            adaptations.append((step + 1, *config))
            optimizer = make_optimizer()
    print(f"input variance estimate {layer.input_variance.item():.3f}; "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return {"adaptations": adaptations, "losses": losses,
            "input_variance": layer.input_variance.item(),
            "terms": layer.current_terms, "rank": layer.current_rank}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
