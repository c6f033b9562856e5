"""Tutorial, "Attention Mechanisms with Sketching": SketchedMultiHeadAttention and
SketchedTransformerBlock.

Runs the attention layer with and without a causal mask, then trains a small sequence model
(one SketchedTransformerBlock, mean pooling, a linear head) to tell apart sequences drawn
around different class prototypes.

Run: ``python examples/attention_transformer.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr


class SketchedMultiHeadAttention(nn.Module):
    """Multi-head attention with sketched projections."""

    def __init__(self, d_model, n_heads, num_terms=6, low_rank=48):
        super().__init__()

        self.d_model = d_model
        self.n_heads = n_heads
        self.d_k = d_model // n_heads

        # Sketched query, key, value projections
        self.query_proj = pr.nn.SKLinear(d_model, d_model, num_terms=num_terms, low_rank=low_rank)
        self.key_proj = pr.nn.SKLinear(d_model, d_model, num_terms=num_terms, low_rank=low_rank)
        self.value_proj = pr.nn.SKLinear(d_model, d_model, num_terms=num_terms, low_rank=low_rank)

        # Output projection
        self.output_proj = pr.nn.SKLinear(d_model, d_model, num_terms=num_terms, low_rank=low_rank)

        self.dropout = nn.Dropout(0.1)

    def forward(self, x, mask=None):
        batch_size, seq_len, d_model = x.shape

        # Generate Q, K, V
        Q = self.query_proj(x).view(batch_size, seq_len, self.n_heads, self.d_k).transpose(1, 2)
        K = self.key_proj(x).view(batch_size, seq_len, self.n_heads, self.d_k).transpose(1, 2)
        V = self.value_proj(x).view(batch_size, seq_len, self.n_heads, self.d_k).transpose(1, 2)

        # Attention computation
        scores = torch.matmul(Q, K.transpose(-2, -1)) / (self.d_k ** 0.5)

        # The mask must broadcast against scores of shape (batch, n_heads, seq, seq):
        # (seq, seq) for a causal mask, (batch, 1, 1, seq) for padding (see
        # document_classifier.py).
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)

        attention_weights = torch.softmax(scores, dim=-1)
        attention_weights = self.dropout(attention_weights)

        context = torch.matmul(attention_weights, V)

        # Concatenate heads and project
        context = context.transpose(1, 2).contiguous().view(batch_size, seq_len, d_model)
        output = self.output_proj(context)

        return output, attention_weights


class SketchedTransformerBlock(nn.Module):
    """Transformer block with sketched layers."""

    def __init__(self, d_model, n_heads, d_ff, num_terms=6, low_rank=48):
        super().__init__()

        self.attention = SketchedMultiHeadAttention(d_model, n_heads, num_terms, low_rank)
        self.norm1 = nn.LayerNorm(d_model)

        # Feed-forward with sketched layers
        self.feed_forward = nn.Sequential(
            pr.nn.SKLinear(d_model, d_ff, num_terms=num_terms*2, low_rank=low_rank*2),
            nn.ReLU(),
            nn.Dropout(0.1),
            pr.nn.SKLinear(d_ff, d_model, num_terms=num_terms, low_rank=low_rank)
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, mask=None):
        # Self-attention with residual connection
        attn_out, _ = self.attention(x, mask)
        x = self.norm1(x + self.dropout(attn_out))

        # Feed-forward with residual connection
        ff_out = self.feed_forward(x)
        x = self.norm2(x + self.dropout(ff_out))

        return x


class SequenceClassifier(nn.Module):
    """Example model (not in the tutorial): transformer block, mean pooling, linear head."""

    def __init__(self, d_model, n_heads, d_ff, num_classes, num_terms=6, low_rank=48):
        super().__init__()
        self.block = SketchedTransformerBlock(d_model, n_heads, d_ff, num_terms, low_rank)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x, mask=None):
        return self.head(self.block(x, mask).mean(dim=1))


def synthetic_sequences(n, seq_len, d_model, num_classes):
    """Sequences of shape (n, seq_len, d_model): a class prototype sequence plus noise."""
    prototypes = torch.randn(num_classes, seq_len, d_model)
    labels = torch.arange(n) % num_classes
    return prototypes[labels] + torch.randn(n, seq_len, d_model), labels


def main(quick=False):
    """Run attention with a causal mask and train a small sketched sequence classifier.

    Returns
    -------
    dict
        ``output_shape``, ``weights_shape`` and ``block_shape`` of the forward passes,
        ``causal_upper_mass`` (attention weight on future positions under the causal mask,
        0 when the mask works), ``losses`` and ``accuracy`` of the training run.
    """
    torch.manual_seed(0)
    d_model, n_heads, d_ff, seq_len = (64, 4, 128, 8) if quick else (128, 8, 512, 16)
    batch = 4

    attention = SketchedMultiHeadAttention(d_model, n_heads)
    attention.eval()  # no dropout on the weights, so the causal check below is exact
    x = torch.randn(batch, seq_len, d_model)
    causal = torch.tril(torch.ones(seq_len, seq_len))
    output, weights = attention(x, mask=causal)
    upper = torch.triu(torch.ones(seq_len, seq_len), diagonal=1).bool()
    causal_upper_mass = weights[..., upper].abs().max().item()
    print(f"attention output {tuple(output.shape)}, weights {tuple(weights.shape)}, "
          f"weight on future positions {causal_upper_mass:.2e}")

    block = SketchedTransformerBlock(d_model, n_heads, d_ff)
    block_out = block(x)
    print(f"transformer block output {tuple(block_out.shape)}")

    num_classes = 4
    n_train, epochs = (64, 3) if quick else (256, 3)
    X, y = synthetic_sequences(n_train + 64, seq_len, d_model, num_classes)
    model = SequenceClassifier(d_model, n_heads, d_ff, num_classes,
                               num_terms=2 if quick else 6, low_rank=16 if quick else 48)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n_train)
        for start in range(0, n_train, 16):
            idx = perm[start:start + 16]
            optimizer.zero_grad()
            loss = criterion(model(X[idx]), y[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"Epoch {epoch + 1}, Loss: {losses[-1]:.4f}")
    model.eval()
    with torch.no_grad():
        accuracy = (model(X[n_train:]).argmax(1) == y[n_train:]).float().mean().item()
    print(f"test accuracy {accuracy:.4f}")
    return {"output_shape": tuple(output.shape), "weights_shape": tuple(weights.shape),
            "block_shape": tuple(block_out.shape), "causal_upper_mass": causal_upper_mass,
            "losses": losses, "accuracy": accuracy}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
