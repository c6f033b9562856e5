"""Tutorial, "Complete Document Classification Pipeline": DocumentClassifier.

Embeddings + learned positions, the tutorial's SketchedTransformerBlock (from
attention_transformer.py), masked average pooling and a sketched classification head. The demo
runs the tutorial's ``train_document_classifier`` (model construction and statistics) and
then trains a smaller classifier on synthetic, variable-length, padded documents.

Run: ``python examples/document_classifier.py`` (``--quick`` for a small, fast run).
"""
# fix: the tutorial's docstrings \"\"\"...\"\"\"" are a SyntaxError in Python; plain
# docstrings here.
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import sketchcore_torch as pr

from attention_transformer import SketchedTransformerBlock


class DocumentClassifier(nn.Module):
    """Complete document classifier using sketched layers."""

    def __init__(self, vocab_size, embed_dim=128, hidden_dims=[512, 256],
                 num_classes=10, max_seq_len=512):
        super().__init__()

        # Embedding layer
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.pos_encoding = nn.Parameter(torch.randn(max_seq_len, embed_dim))

        # Transformer-style encoder with sketched layers
        self.encoder = SketchedTransformerBlock(
            d_model=embed_dim,
            n_heads=8,
            d_ff=embed_dim*4,
            num_terms=6,
            low_rank=48
        )

        # Global pooling
        self.global_pool = nn.AdaptiveAvgPool1d(1)

        # Classification head with sketched layers
        classifier_layers = []
        current_dim = embed_dim

        for hidden_dim in hidden_dims:
            classifier_layers.extend([
                pr.nn.SKLinear(current_dim, hidden_dim, num_terms=8, low_rank=64),
                nn.ReLU(),
                nn.Dropout(0.3)
            ])
            current_dim = hidden_dim

        classifier_layers.append(pr.nn.SKLinear(current_dim, num_classes, num_terms=4, low_rank=32))

        self.classifier = nn.Sequential(*classifier_layers)

    def forward(self, input_ids, attention_mask=None):
        # Embedding with positional encoding
        seq_len = input_ids.size(1)
        embeddings = self.embedding(input_ids)
        embeddings = embeddings + self.pos_encoding[:seq_len]

        # Encoder
        # fix: the attention applies `mask == 0` to scores of shape (batch, n_heads, seq,
        # seq). The tutorial passes the (batch, seq) padding mask as is, which broadcasts
        # against the last two dimensions (seq, seq): an error unless batch == seq, and a
        # wrong mask when it is. The padding mask marks keys, so it becomes
        # (batch, 1, 1, seq).
        encoder_mask = None if attention_mask is None else attention_mask[:, None, None, :]
        encoded = self.encoder(embeddings, encoder_mask)

        # Global pooling
        if attention_mask is not None:
            # Masked average pooling
            masked_encoded = encoded * attention_mask.unsqueeze(-1)
            pooled = masked_encoded.sum(dim=1) / attention_mask.sum(dim=1, keepdim=True)
        else:
            # Simple average pooling
            pooled = encoded.mean(dim=1)

        # Classification
        logits = self.classifier(pooled)

        return logits


# Training function for document classification
def train_document_classifier():
    # Hyperparameters
    vocab_size = 10000
    max_seq_len = 512
    num_classes = 20
    batch_size = 32  # noqa: F841  (the tutorial's, unused: this function only builds the model)

    # Model
    model = DocumentClassifier(
        vocab_size=vocab_size,
        embed_dim=128,
        hidden_dims=[512, 256],
        num_classes=num_classes,
        max_seq_len=max_seq_len
    )

    # Print model statistics
    total_params = sum(p.numel() for p in model.parameters())
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    print("Model Parameters:")
    print(f"  Total: {total_params:,}")
    print(f"  Trainable: {trainable_params:,}")

    # Calculate memory usage for sketched vs standard layers
    sketched_params = sum(p.numel() for name, p in model.named_parameters()
                          if any(layer_type in name for layer_type in ['S1s', 'S2s']))

    print(f"  Sketched layer parameters: {sketched_params:,}")

    return model


def synthetic_documents(n_docs, vocab_size, num_classes, max_len, min_len, keywords=4):
    """Padded token ids (n_docs, max_len), 0/1 attention mask, labels.

    Each class has ``keywords`` tokens of its own; a document's tokens are its class's
    keywords with probability 0.3, otherwise any token. Lengths vary in [min_len, max_len]
    and the rest is padding (token 0, mask 0).
    """
    labels = torch.arange(n_docs) % num_classes
    lengths = torch.randint(min_len, max_len + 1, (n_docs,))
    own = 1 + labels[:, None] * keywords + torch.randint(0, keywords, (n_docs, max_len))
    noise = torch.randint(1, vocab_size, (n_docs, max_len))
    tokens = torch.where(torch.rand(n_docs, max_len) < 0.3, own, noise)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    return tokens * mask, mask, labels


def main(quick=False):
    """Build the tutorial's classifier, then train a smaller one on synthetic documents.

    Returns
    -------
    dict
        ``tutorial_params`` (total parameters of the tutorial's model), ``logits_shape``,
        ``losses`` per step, ``accuracy``, ``padding_invariance`` (largest change of the
        logits when the padding tokens are changed: 0 up to rounding when masks work).
    """
    torch.manual_seed(0)
    tutorial_model = train_document_classifier()
    tutorial_params = sum(p.numel() for p in tutorial_model.parameters())

    vocab, classes, max_len, n_docs, epochs = ((200, 4, 16, 64, 3) if quick
                                               else (2000, 8, 48, 256, 6))
    tokens, mask, labels = synthetic_documents(n_docs + 64, vocab, classes, max_len,
                                               min_len=max_len // 4)
    model = DocumentClassifier(vocab_size=vocab, embed_dim=64, hidden_dims=[128, 64],
                               num_classes=classes, max_seq_len=max_len)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n_docs)
        for start in range(0, n_docs, 16):
            idx = perm[start:start + 16]
            optimizer.zero_grad()
            logits = model(tokens[idx], attention_mask=mask[idx])
            loss = criterion(logits, labels[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"Epoch {epoch + 1}, Loss: {losses[-1]:.4f}")

    model.eval()
    test_tokens, test_mask = tokens[n_docs:], mask[n_docs:]
    with torch.no_grad():
        logits = model(test_tokens, attention_mask=test_mask)
        # Padding must not matter: change every padded token and compare.
        repadded = torch.where(test_mask.bool(), test_tokens, torch.full_like(test_tokens, 7))
        padding_invariance = (model(repadded, attention_mask=test_mask) - logits).abs().max().item()
    accuracy = (logits.argmax(1) == labels[n_docs:]).float().mean().item()
    print(f"logits {tuple(logits.shape)}, test accuracy {accuracy:.4f}, "
          f"change from padding {padding_invariance:.2e}")
    return {"tutorial_params": tutorial_params, "logits_shape": tuple(logits.shape),
            "losses": losses, "accuracy": accuracy, "padding_invariance": padding_invariance}


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
