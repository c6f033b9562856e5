"""Tutorial, "Memory Monitoring During Training": MemoryEfficientTrainer.

A trainer with gradient accumulation and memory logging, used here to train the tutorial's
SketchedMLP on its synthetic data set and validate it.

Run: ``python examples/memory_efficient_trainer.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import psutil
import gc

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr  # noqa: F401  (the tutorial's import; model: mlp_comparison)
from torch.utils.data import DataLoader, TensorDataset

from mlp_comparison import SketchedMLP, create_synthetic_dataset


class MemoryEfficientTrainer:
    """Trainer with memory monitoring and optimization."""

    def __init__(self, model, train_loader, val_loader, device):
        self.model = model.to(device)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.device = device

        self.memory_stats = []

    def train_epoch(self, optimizer, criterion, accumulation_steps=1):
        """Train one epoch with gradient accumulation."""

        self.model.train()
        total_loss = 0
        num_batches = 0

        optimizer.zero_grad()

        for batch_idx, (data, target) in enumerate(self.train_loader):
            data, target = data.to(self.device), target.to(self.device)

            # Forward pass
            output = self.model(data)
            loss = criterion(output, target) / accumulation_steps

            # Backward pass
            loss.backward()

            total_loss += loss.item() * accumulation_steps
            num_batches += 1

            # Update weights every accumulation_steps
            # fix: also step after the last batch. When the number of batches is not a
            # multiple of accumulation_steps, the tutorial leaves the last batches'
            # gradients in .grad, and the zero_grad() at the start of the next epoch
            # silently discards them.
            if (batch_idx + 1) % accumulation_steps == 0 or \
                    batch_idx + 1 == len(self.train_loader):
                optimizer.step()
                optimizer.zero_grad()

            # Memory monitoring
            if batch_idx % 50 == 0:
                self.log_memory_usage(batch_idx)

            # Cleanup
            del data, target, output, loss
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()

        return total_loss / num_batches

    def log_memory_usage(self, batch_idx):
        """Log current memory usage."""

        if self.device.type == 'cuda':
            gpu_memory = torch.cuda.memory_allocated() / 1024**2  # MB
            gpu_cached = torch.cuda.memory_reserved() / 1024**2   # MB
        else:
            gpu_memory = gpu_cached = 0

        # fix: psutil.virtual_memory().used is the memory used by every process on the
        # machine, not by this training run; the resident set size of this process is.
        cpu_memory = psutil.Process().memory_info().rss / 1024**2  # MB

        self.memory_stats.append({
            'batch': batch_idx,
            'gpu_allocated': gpu_memory,
            'gpu_cached': gpu_cached,
            'cpu_used': cpu_memory
        })

    def validate(self, criterion):
        """Validate model performance."""

        self.model.eval()
        total_loss = 0
        correct = 0
        total = 0

        with torch.no_grad():
            for data, target in self.val_loader:
                data, target = data.to(self.device), target.to(self.device)

                output = self.model(data)
                loss = criterion(output, target)

                total_loss += loss.item()
                _, predicted = torch.max(output.data, 1)
                total += target.size(0)
                correct += (predicted == target).sum().item()

        accuracy = correct / total
        avg_loss = total_loss / len(self.val_loader)

        return avg_loss, accuracy


def main(quick=False):
    """Train the tutorial's SketchedMLP with MemoryEfficientTrainer (accumulation 2).

    Returns
    -------
    dict
        ``train_losses`` per epoch, ``val_loss``, ``val_accuracy``, ``memory_stats``.
    """
    torch.manual_seed(0)
    n_samples, epochs = (300, 1) if quick else (5000, 3)
    X, y = create_synthetic_dataset(n_samples=n_samples, input_dim=784, n_classes=10)
    split = int(0.8 * len(X))
    train_loader = DataLoader(TensorDataset(X[:split], y[:split]), batch_size=32, shuffle=True)
    val_loader = DataLoader(TensorDataset(X[split:], y[split:]), batch_size=64)

    # The trainer reads device.type: it needs a torch.device, not a string.
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model = SketchedMLP(784, [512, 256, 128], 10)
    trainer = MemoryEfficientTrainer(model, train_loader, val_loader, device)
    optimizer = optim.Adam(trainer.model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()

    train_losses = []
    for epoch in range(epochs):
        train_losses.append(trainer.train_epoch(optimizer, criterion, accumulation_steps=2))
        val_loss, val_accuracy = trainer.validate(criterion)
        gc.collect()
        print(f"Epoch {epoch + 1}: train loss {train_losses[-1]:.4f}, val loss {val_loss:.4f}, "
              f"val accuracy {val_accuracy:.4f}")
    for stat in trainer.memory_stats:
        print(f"  batch {stat['batch']:4d}: process memory {stat['cpu_used']:.0f} MB, "
              f"GPU allocated {stat['gpu_allocated']:.0f} MB")
    return {"train_losses": train_losses, "val_loss": val_loss, "val_accuracy": val_accuracy,
            "memory_stats": trainer.memory_stats}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
