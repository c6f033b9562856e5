"""Tutorial, "Building Your First Sketched Network": StandardMLP vs SketchedMLP.

Builds the tutorial's dense and sketched 784 -> [512, 256, 128] -> 10 MLPs, compares their
parameter counts, then trains both on the tutorial's synthetic data set and compares test
accuracy.

Run: ``python examples/mlp_comparison.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial writes its docstrings as \"\"\"...\"\"\"" (quotes escaped by its
# reStructuredText source, plus a stray quote), a SyntaxError in Python; they are plain
# docstrings here, and its print("\\n...") is print("\n...").
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr
from torch.utils.data import DataLoader, TensorDataset


# Standard neural network
class StandardMLP(nn.Module):
    def __init__(self, input_dim, hidden_dims, output_dim, dropout=0.1):
        super().__init__()

        layers = []
        current_dim = input_dim

        for hidden_dim in hidden_dims:
            layers.extend([
                nn.Linear(current_dim, hidden_dim),
                nn.ReLU(),
                nn.Dropout(dropout)
            ])
            current_dim = hidden_dim

        layers.append(nn.Linear(current_dim, output_dim))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x)


# Sketched neural network
class SketchedMLP(nn.Module):
    def __init__(self, input_dim, hidden_dims, output_dim,
                 num_terms_schedule=None, low_rank_schedule=None, dropout=0.1):
        super().__init__()

        # Default parameter schedules
        if num_terms_schedule is None:
            num_terms_schedule = [8] * len(hidden_dims) + [4]

        if low_rank_schedule is None:
            base_rank = min(64, min(input_dim, hidden_dims[0]) // 4)
            low_rank_schedule = [base_rank // (i + 1) for i in range(len(hidden_dims))] + [16]

        layers = []
        current_dim = input_dim

        for i, hidden_dim in enumerate(hidden_dims):
            layers.extend([
                pr.nn.SKLinear(
                    current_dim, hidden_dim,
                    num_terms=num_terms_schedule[i],
                    low_rank=low_rank_schedule[i]
                ),
                nn.ReLU(),
                nn.Dropout(dropout)
            ])
            current_dim = hidden_dim

        # Output layer
        layers.append(pr.nn.SKLinear(
            current_dim, output_dim,
            num_terms=num_terms_schedule[-1],
            low_rank=low_rank_schedule[-1]
        ))

        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x)


def create_synthetic_dataset(n_samples=10000, input_dim=784, n_classes=10):
    """Create synthetic classification dataset."""

    # Generate structured data
    class_centers = torch.randn(n_classes, input_dim)

    X = []
    y = []

    for class_idx in range(n_classes):
        n_class_samples = n_samples // n_classes

        # Generate samples around class center
        samples = class_centers[class_idx] + 0.5 * torch.randn(n_class_samples, input_dim)
        labels = torch.full((n_class_samples,), class_idx)

        X.append(samples)
        y.append(labels)

    X = torch.cat(X, dim=0)
    y = torch.cat(y, dim=0)

    # Shuffle data
    perm = torch.randperm(len(X))
    X, y = X[perm], y[perm]

    return X, y


def train_and_evaluate(model, train_loader, test_loader, num_epochs=10, lr=0.001):
    """Train and evaluate a model."""

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model = model.to(device)

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=lr)

    # Training
    model.train()
    train_losses = []

    for epoch in range(num_epochs):
        epoch_loss = 0
        for batch_x, batch_y in train_loader:
            batch_x, batch_y = batch_x.to(device), batch_y.to(device)

            optimizer.zero_grad()
            outputs = model(batch_x)
            loss = criterion(outputs, batch_y)
            loss.backward()
            optimizer.step()

            epoch_loss += loss.item()

        avg_loss = epoch_loss / len(train_loader)
        train_losses.append(avg_loss)

        if (epoch + 1) % 2 == 0:
            print(f"Epoch {epoch+1}, Loss: {avg_loss:.4f}")

    # Evaluation
    model.eval()
    correct = 0
    total = 0

    with torch.no_grad():
        for batch_x, batch_y in test_loader:
            batch_x, batch_y = batch_x.to(device), batch_y.to(device)
            outputs = model(batch_x)
            _, predicted = torch.max(outputs.data, 1)
            total += batch_y.size(0)
            correct += (predicted == batch_y).sum().item()

    accuracy = correct / total
    return train_losses, accuracy


def main(quick=False):
    """Run the tutorial's comparison; ``quick`` shrinks the data and the epochs.

    Returns
    -------
    dict
        Parameter counts, accuracies and per-epoch losses of both models.
    """
    torch.manual_seed(0)

    # Compare models
    input_dim, hidden_dims, output_dim = 784, [512, 256, 128], 10

    standard_model = StandardMLP(input_dim, hidden_dims, output_dim)
    sketched_model = SketchedMLP(input_dim, hidden_dims, output_dim)

    # Parameter comparison
    standard_params = sum(p.numel() for p in standard_model.parameters())
    sketched_params = sum(p.numel() for p in sketched_model.parameters())

    print(f"Standard model parameters: {standard_params:,}")
    print(f"Sketched model parameters: {sketched_params:,}")
    print(f"Parameter reduction: {(1 - sketched_params/standard_params)*100:.1f}%")

    # Create dataset (the tutorial's sizes; quick mode: 500 samples, 2 epochs)
    n_samples, num_epochs = (500, 2) if quick else (5000, 10)
    X, y = create_synthetic_dataset(n_samples=n_samples, input_dim=784, n_classes=10)

    # Split into train/test
    split_idx = int(0.8 * len(X))
    X_train, X_test = X[:split_idx], X[split_idx:]
    y_train, y_test = y[:split_idx], y[split_idx:]

    # Create data loaders
    train_dataset = TensorDataset(X_train, y_train)
    test_dataset = TensorDataset(X_test, y_test)

    train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_dataset, batch_size=64, shuffle=False)

    # Train both models
    print("Training standard model:")
    standard_losses, standard_acc = train_and_evaluate(
        StandardMLP(784, [512, 256, 128], 10),
        train_loader, test_loader, num_epochs=num_epochs
    )

    print("\nTraining sketched model:")
    sketched_losses, sketched_acc = train_and_evaluate(
        SketchedMLP(784, [512, 256, 128], 10),
        train_loader, test_loader, num_epochs=num_epochs
    )

    print("\nFinal Results:")
    print(f"Standard model accuracy: {standard_acc:.4f}")
    print(f"Sketched model accuracy: {sketched_acc:.4f}")
    print(f"Accuracy difference: {abs(standard_acc - sketched_acc):.4f}")
    return {"standard_params": standard_params, "sketched_params": sketched_params,
            "standard_acc": standard_acc, "sketched_acc": sketched_acc,
            "standard_losses": standard_losses, "sketched_losses": sketched_losses}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
