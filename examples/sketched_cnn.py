"""Tutorial, "Convolutional Networks with Sketched Layers": SketchedCNN.

A standard convolutional feature extractor followed by sketched fully connected layers,
trained on synthetic 3x32x32 "images" (a random template per class plus noise).

Run: ``python examples/sketched_cnn.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr


class SketchedCNN(nn.Module):
    """CNN with sketched fully connected layers."""

    def __init__(self, num_classes=10, sketch_params=None):
        super().__init__()

        if sketch_params is None:
            sketch_params = {'num_terms': 8, 'low_rank': 64}

        # Convolutional layers (standard)
        self.conv_layers = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),

            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),

            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

        # Calculate flattened size (assuming 32x32 input)
        self.flatten_size = 128 * 4 * 4

        # Sketched fully connected layers
        self.fc_layers = nn.Sequential(
            nn.Flatten(),
            pr.nn.SKLinear(
                self.flatten_size, 512,
                num_terms=sketch_params['num_terms'],
                low_rank=sketch_params['low_rank']
            ),
            nn.ReLU(),
            nn.Dropout(0.2),

            pr.nn.SKLinear(
                512, 256,
                num_terms=sketch_params['num_terms'] // 2,
                low_rank=sketch_params['low_rank'] // 2
            ),
            nn.ReLU(),
            nn.Dropout(0.2),

            pr.nn.SKLinear(256, num_classes, num_terms=2, low_rank=16)
        )

    def forward(self, x):
        x = self.conv_layers(x)
        x = self.fc_layers(x)
        return x


def synthetic_images(n_samples, num_classes=10, noise=1.0):
    """Images of shape (n, 3, 32, 32): one random template per class plus Gaussian noise."""
    templates = torch.randn(num_classes, 3, 32, 32)
    labels = torch.arange(n_samples) % num_classes
    images = templates[labels] + noise * torch.randn(n_samples, 3, 32, 32)
    perm = torch.randperm(n_samples)
    return images[perm], labels[perm]


def main(quick=False):
    """Build SketchedCNN, train it, report loss and accuracy.

    Returns
    -------
    dict
        ``losses`` (per step), ``accuracy`` on held-out images, ``params``.
    """
    torch.manual_seed(0)
    model = SketchedCNN(num_classes=10)
    params = sum(p.numel() for p in model.parameters())
    print(f"SketchedCNN parameters: {params:,}")

    n_train, n_test, epochs, batch = (128, 64, 1, 32) if quick else (2000, 500, 3, 64)
    X, y = synthetic_images(n_train + n_test)
    X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]

    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n_train)
        for start in range(0, n_train, batch):
            idx = perm[start:start + batch]
            optimizer.zero_grad()
            loss = criterion(model(X_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"Epoch {epoch + 1}, Loss: {losses[-1]:.4f}")

    model.eval()
    with torch.no_grad():
        logits = model(X_test)
    accuracy = (logits.argmax(1) == y_test).float().mean().item()
    print(f"Output shape: {tuple(logits.shape)}, test accuracy: {accuracy:.4f}")
    return {"losses": losses, "accuracy": accuracy, "params": params,
            "output_shape": tuple(logits.shape)}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
