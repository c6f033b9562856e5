"""Tutorial, "Residual Networks with Sketching": SketchedResidualBlock and SketchedResNet.

Builds the tutorial's ResNet-style model (784 inputs, four residual blocks of 256 and 512
features, 10 classes) and trains it on the tutorial's synthetic data set.

Run: ``python examples/sketched_resnet.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr

from mlp_comparison import create_synthetic_dataset


class SketchedResidualBlock(nn.Module):
    """Residual block with sketched linear transformations."""

    def __init__(self, in_features, out_features, num_terms=4, low_rank=32):
        super().__init__()

        # Main path with sketched layers
        self.main_path = nn.Sequential(
            pr.nn.SKLinear(in_features, out_features, num_terms=num_terms, low_rank=low_rank),
            nn.BatchNorm1d(out_features),
            nn.ReLU(),
            pr.nn.SKLinear(out_features, out_features, num_terms=num_terms, low_rank=low_rank),
            nn.BatchNorm1d(out_features)
        )

        # Shortcut connection
        if in_features != out_features:
            self.shortcut = pr.nn.SKLinear(in_features, out_features, num_terms=2, low_rank=16)
        else:
            self.shortcut = nn.Identity()

        self.relu = nn.ReLU()

    def forward(self, x):
        main_out = self.main_path(x)
        shortcut_out = self.shortcut(x)
        return self.relu(main_out + shortcut_out)


class SketchedResNet(nn.Module):
    """ResNet-style architecture with sketched layers."""

    def __init__(self, input_dim, block_configs, num_classes):
        super().__init__()

        # Input layer
        self.input_layer = nn.Sequential(
            pr.nn.SKLinear(input_dim, block_configs[0]['features'], num_terms=8, low_rank=64),
            nn.BatchNorm1d(block_configs[0]['features']),
            nn.ReLU()
        )

        # Residual blocks
        self.blocks = nn.ModuleList()
        current_features = block_configs[0]['features']

        for config in block_configs:
            block = SketchedResidualBlock(
                current_features,
                config['features'],
                num_terms=config.get('num_terms', 4),
                low_rank=config.get('low_rank', 32)
            )
            self.blocks.append(block)
            current_features = config['features']

        # Output layer
        self.output_layer = pr.nn.SKLinear(current_features, num_classes, num_terms=2, low_rank=16)

    def forward(self, x):
        x = self.input_layer(x)

        for block in self.blocks:
            x = block(x)

        x = self.output_layer(x)
        return x


# Example usage
block_configs = [
    {'features': 256, 'num_terms': 6, 'low_rank': 48},
    {'features': 256, 'num_terms': 6, 'low_rank': 48},
    {'features': 512, 'num_terms': 8, 'low_rank': 64},
    {'features': 512, 'num_terms': 8, 'low_rank': 64},
]


def main(quick=False):
    """Build the tutorial's SketchedResNet and train it on synthetic data.

    Returns
    -------
    dict
        ``losses`` (per step), ``accuracy``, ``params``, ``output_shape``.
    """
    torch.manual_seed(0)
    resnet_model = SketchedResNet(input_dim=784, block_configs=block_configs, num_classes=10)
    params = sum(p.numel() for p in resnet_model.parameters())
    print(f"SketchedResNet parameters: {params:,}")

    n_samples, epochs, batch = (320, 1, 32) if quick else (2000, 3, 64)
    X, y = create_synthetic_dataset(n_samples=n_samples, input_dim=784, n_classes=10)
    split = int(0.8 * len(X))
    optimizer = optim.Adam(resnet_model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    losses = []
    resnet_model.train()
    for epoch in range(epochs):
        perm = torch.randperm(split)
        for start in range(0, split, batch):
            idx = perm[start:start + batch]
            if len(idx) < 2:
                continue  # BatchNorm1d needs more than one sample per batch in training
            optimizer.zero_grad()
            loss = criterion(resnet_model(X[idx]), y[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"Epoch {epoch + 1}, Loss: {losses[-1]:.4f}")

    resnet_model.eval()
    with torch.no_grad():
        logits = resnet_model(X[split:])
    accuracy = (logits.argmax(1) == y[split:]).float().mean().item()
    print(f"Output shape: {tuple(logits.shape)}, test accuracy: {accuracy:.4f}")
    return {"losses": losses, "accuracy": accuracy, "params": params,
            "output_shape": tuple(logits.shape)}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
