"""Tutorial, "Mixed Precision Training": train_with_mixed_precision.

Trains the tutorial's SketchedMLP under automatic mixed precision: float16 with gradient
scaling on a GPU, bfloat16 (no scaling needed) on the CPU.

Run: ``python examples/mixed_precision.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr  # noqa: F401  (the tutorial's import; model: mlp_comparison)
from torch.utils.data import DataLoader, TensorDataset

from mlp_comparison import SketchedMLP, create_synthetic_dataset


def train_with_mixed_precision(model, train_loader, val_loader, num_epochs=10):
    """Train model using automatic mixed precision."""

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model = model.to(device)

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    # fix: torch.cuda.amp.GradScaler() is deprecated and, without CUDA, warns and disables
    # itself; torch.cuda.amp.autocast() likewise does nothing on the CPU. Use the
    # device-generic torch.amp API: float16 + loss scaling on CUDA, bfloat16 on the CPU
    # (bfloat16 has float32's exponent range, so gradients need no scaling there).
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == 'cuda')

    epoch_losses = []  # added: returned so callers (and the tests) can check training
    for epoch in range(num_epochs):
        model.train()
        epoch_loss = 0

        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)

            optimizer.zero_grad()

            # Forward pass with autocast
            with torch.amp.autocast(device.type, dtype=amp_dtype):
                output = model(data)
                loss = criterion(output, target)

            # Backward pass with gradient scaling
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

            epoch_loss += loss.item()

        print(f"Epoch {epoch+1}, Loss: {epoch_loss/len(train_loader):.4f}")
        epoch_losses.append(epoch_loss / len(train_loader))
    return epoch_losses


def main(quick=False):
    """Train the tutorial's SketchedMLP with mixed precision, then check its accuracy.

    Returns
    -------
    dict
        ``losses`` per epoch, ``accuracy`` (float32 evaluation), ``output_dtype`` under
        autocast.
    """
    torch.manual_seed(0)
    n_samples, epochs = (400, 2) if quick else (5000, 5)
    X, y = create_synthetic_dataset(n_samples=n_samples, input_dim=784, n_classes=10)
    split = int(0.8 * len(X))
    train_loader = DataLoader(TensorDataset(X[:split], y[:split]), batch_size=64, shuffle=True)
    val_loader = DataLoader(TensorDataset(X[split:], y[split:]), batch_size=64)
    model = SketchedMLP(784, [512, 256, 128], 10)
    losses = train_with_mixed_precision(model, train_loader, val_loader, num_epochs=epochs)

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        with torch.amp.autocast(device.type,
                                dtype=torch.float16 if device.type == 'cuda' else torch.bfloat16):
            output_dtype = model(X[split:].to(device)).dtype
        accuracy = (model(X[split:].to(device)).argmax(1).cpu() == y[split:]).float().mean().item()
    print(f"autocast output dtype {output_dtype}; float32 accuracy {accuracy:.4f}")
    return {"losses": losses, "accuracy": accuracy, "output_dtype": output_dtype}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
