"""The tutorial's standard-vs-sketched MLP comparison (``python -m sketchcore_torch demo``).

Trains three 784 -> [512, 256, 128] -> 10 classifiers on the tutorial's synthetic data set
(``create_synthetic_dataset``: 5000 samples around 10 random class centres, 80/20 split,
batch 64, Adam with lr 1e-3) and prints one table row per model: parameters, test accuracy
and training time per epoch.

- ``standard``: the dense ``StandardMLP``;
- ``sketched (tutorial)``: ``SketchedMLP`` with the tutorial's default schedules (terms
  ``[8, 8, 8, 4]``, ranks ``[64, 32, 21, 16]``) -- which has *more* parameters than the dense
  model, as the tutorial's own parameter comparison shows;
- ``sketched (compressed)``: ``SketchedMLP`` with :data:`COMPRESSED_SCHEDULE`, about a fifth
  of the dense parameters.
"""
import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.optim as optim
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["COMPRESSED_SCHEDULE", "DemoResult", "create_synthetic_dataset", "build_models",
           "train_and_evaluate", "run_demo", "format_table", "resolve_device"]

INPUT_DIM, HIDDEN_DIMS, OUTPUT_DIM = 784, (512, 256, 128), 10

#: (num_terms_schedule, low_rank_schedule) of the compressed model. One or two terms of
#: modest rank per layer: 0.20x the dense parameters; the synthetic classes are well
#: separated, so accuracy stays at the dense model's level.
COMPRESSED_SCHEDULE = ([2, 2, 2, 1], [32, 16, 8, 8])


@dataclass
class DemoResult:
    """One trained model's row of the demo table.

    Attributes
    ----------
    name : str
    parameters : int
        Trainable parameters.
    accuracy : float
        Test accuracy in [0, 1].
    epoch_seconds : float
        Mean wall time of one training epoch (evaluation excluded).
    losses : list of float
        Mean training loss of each epoch.
    """

    name: str
    parameters: int
    accuracy: float
    epoch_seconds: float
    losses: list


def create_synthetic_dataset(n_samples=10000, input_dim=784, n_classes=10, generator=None):
    """The tutorial's synthetic classification data set.

    ``n_samples // n_classes`` samples per class, each ``centre + 0.5 * N(0, I)`` with
    centres ``N(0, I)``, shuffled.

    Parameters
    ----------
    n_samples, input_dim, n_classes : int
    generator : torch.Generator, optional
        Source of randomness (default: torch's global generator, as in the tutorial).

    Returns
    -------
    X : Tensor of shape (n_classes * (n_samples // n_classes), input_dim), float32
    y : Tensor of shape (len(X),), int64
    """
    centres = torch.randn(n_classes, input_dim, generator=generator)
    per_class = n_samples // n_classes
    X, y = [], []
    for c in range(n_classes):
        X.append(centres[c] + 0.5 * torch.randn(per_class, input_dim, generator=generator))
        y.append(torch.full((per_class,), c))
    X, y = torch.cat(X), torch.cat(y)
    perm = torch.randperm(len(X), generator=generator)
    return X[perm], y[perm]


def build_models(seed):
    """The three demo models, each built after ``torch.manual_seed`` from ``seed``.

    Returns
    -------
    list of (str, nn.Module)
    """
    import warnings

    from sketchcore_torch.builders import SketchedMLP, StandardMLP

    models = []
    torch.manual_seed(seed)
    models.append(("standard", StandardMLP(INPUT_DIM, list(HIDDEN_DIMS), OUTPUT_DIM)))
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # The tutorial's default schedule knowingly has layers larger than their dense
        # twins (the table shows it); the warning would only clutter the demo's output.
        warnings.simplefilter("ignore", UserWarning)
        models.append(("sketched (tutorial)",
                       SketchedMLP(INPUT_DIM, list(HIDDEN_DIMS), OUTPUT_DIM, seed=seed)))
    torch.manual_seed(seed)
    terms, ranks = COMPRESSED_SCHEDULE
    models.append(("sketched (compressed)",
                   SketchedMLP(INPUT_DIM, list(HIDDEN_DIMS), OUTPUT_DIM,
                               num_terms_schedule=terms, low_rank_schedule=ranks, seed=seed)))
    return models


def train_and_evaluate(model, train_loader, test_loader, num_epochs=10, lr=0.001,
                       device="cpu", progress=None, name="model"):
    """Train with Adam and cross-entropy, then measure test accuracy (the tutorial's loop).

    Parameters
    ----------
    model : nn.Module
    train_loader, test_loader : DataLoader
        Batches of (inputs (batch, 784), labels (batch,)).
    num_epochs : int
    lr : float
    device : str or torch.device
    progress : callable, optional
        ``progress(n_batches, loss)`` called after every training batch (a tqdm update).
    name : str
        Row name.

    Returns
    -------
    DemoResult
    """
    device = torch.device(device)
    model = model.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=lr)
    losses, epoch_times = [], []
    for _ in range(num_epochs):
        model.train()
        total = 0.0
        start = time.perf_counter()
        for batch_x, batch_y in train_loader:
            batch_x, batch_y = batch_x.to(device), batch_y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(batch_x), batch_y)
            loss.backward()
            optimizer.step()
            value = loss.item()
            total += value
            if progress is not None:
                progress(1, value)
        epoch_times.append(time.perf_counter() - start)
        losses.append(total / len(train_loader))
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for batch_x, batch_y in test_loader:
            batch_x, batch_y = batch_x.to(device), batch_y.to(device)
            predicted = model(batch_x).argmax(dim=1)
            count += batch_y.numel()
            correct += (predicted == batch_y).sum().item()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return DemoResult(name, params, correct / max(count, 1),
                      sum(epoch_times) / max(len(epoch_times), 1), losses)


def resolve_device(device):
    """``"auto"`` -> cuda when available else cpu; ``"cuda"`` without CUDA -> ValueError."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return device


def run_demo(epochs=10, device="auto", seed=0, n_samples=5000, batch_size=64, lr=1e-3,
             progress=True, threads=1):
    """Run the comparison and return its rows.

    Parameters
    ----------
    epochs : int, default 10
        Training epochs per model (the tutorial's ``num_epochs``).
    device : {"auto", "cpu", "cuda"}
    seed : int, default 0
        Seeds the data set, the shuffling, the initial weights and the sign matrices: the
        same seed gives the same table (up to timings).
    n_samples, batch_size : int
        Data set size (80% train, 20% test) and batch size.
    lr : float
        Adam learning rate.
    progress : bool
        Show a tqdm bar per model (on stderr).
    threads : int, default 1
        torch intra-op CPU threads during the run (0 keeps torch's setting). One thread is
        the default because batch-64 layers gain little from more, while on a loaded machine
        OpenMP threads that wait on each other for a core made epochs 10-40x slower (2
        threads on 2 busy cores: 20 s instead of 0.6 s per epoch). Applies to torch and,
        through threadpoolctl, to the OpenMP and BLAS pools of sketchcore's kernels;
        restored afterwards.

    Returns
    -------
    list of DemoResult

    Raises
    ------
    ValueError
        Non-positive ``epochs``, ``n_samples`` < 20, ``batch_size`` < 1, negative
        ``threads``, or a bad device.
    """
    for value, name, low in ((epochs, "epochs", 1), (n_samples, "n_samples", 20),
                             (batch_size, "batch_size", 1), (threads, "threads", 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    X, y = create_synthetic_dataset(n_samples=n_samples, input_dim=INPUT_DIM,
                                    n_classes=OUTPUT_DIM, generator=gen)
    split = int(0.8 * len(X))
    train_set = TensorDataset(X[:split], y[:split])
    test_set = TensorDataset(X[split:], y[split:])
    results = []
    # Once the well-separated classes are learnt, gradients shrink to ~1e-20 and Adam's
    # second moments (g**2) become float32 denormals, which x86 CPUs process slowly: with
    # them flushed to zero the dense model's epochs take 0.23 s instead of 0.27 s (1 thread;
    # an Adam step on denormal gradients alone is 2x slower). Nothing visible in the results
    # changes. torch has no getter for this flag: it is put back to torch's default (off).
    flush = torch.set_flush_denormal(True)
    old_threads = torch.get_num_threads()
    limits = contextlib.nullcontext()
    if threads:
        torch.set_num_threads(threads)
        # sketchcore's kernels call SciPy's OpenBLAS, whose thread pool torch's setting
        # does not reach.
        limits = threadpool_limits(limits=threads)
    try:
        with limits:
            for name, model in build_models(seed):
                results.append(_train_one(name, model, train_set, test_set, epochs,
                                          batch_size, lr, device, seed, progress))
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)
    return results


def _train_one(name, model, train_set, test_set, epochs, batch_size, lr, device, seed,
               progress):
    """Train and evaluate one demo model with its own seeded loaders and tqdm bar."""
    loader_gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                              generator=loader_gen)
    test_loader = DataLoader(test_set, batch_size=batch_size, shuffle=False)
    # Dropout draws from the global generator: reseed so each row is reproducible alone.
    torch.manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * len(train_loader), desc=f"{name:<21}", unit="batch",
                   leave=True, dynamic_ncols=True)

    def callback(n, loss):
        bar.update(n)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    try:
        return train_and_evaluate(model, train_loader, test_loader, num_epochs=epochs,
                                  lr=lr, device=device,
                                  progress=callback if bar is not None else None, name=name)
    finally:
        if bar is not None:
            bar.close()


def format_table(results):
    """Render demo rows as a text table (model, parameters, vs standard, accuracy, s/epoch).

    Parameters
    ----------
    results : list of DemoResult
        The first row is the baseline of the "vs standard" column.

    Returns
    -------
    str
    """
    base = results[0].parameters if results else 1
    header = ("model", "parameters", "vs standard", "accuracy", "time/epoch (s)")
    rows = [(r.name, f"{r.parameters:,}", f"{r.parameters / base:.2f}x", f"{r.accuracy:.4f}",
             f"{r.epoch_seconds:.3f}") for r in results]
    widths = [max(len(header[c]), *(len(row[c]) for row in rows)) for c in range(len(header))]

    def fmt(cells):
        return " | ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                          for c, (cell, w) in enumerate(zip(cells, widths)))

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in rows)])
