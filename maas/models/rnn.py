"""Recurrent models: a sequence classifier and a language model, on RNN, LSTM or GRU cells.

clf = RNNClassifier(input_size=8, num_classes=10, cell="lstm")
logits = clf(torch.randn(4, 8, 8))           # (B, T, F) -> (4, 10)
lm = RNNLanguageModel(vocab_size=100, cell="gru")
logits = lm(torch.randint(0, 100, (4, 16)))  # (4, 16, 100)
"""

from __future__ import annotations

import torch
from torch import nn

CELLS: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(nn.Module):
    """Reads a (B, T, F) sequence; the last step's hidden state (both directions) -> classes."""

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, F), or (B, C, H, W) images read row by row -> (B, num_classes)."""
        if x.dim() == 4:
            x = x.flatten(1, 2)  # (B, C*H, W): each image row is one time step
        out, _ = self.rnn(x)  # (B, T, D*hidden)
        return self.head(out[:, -1])


class RNNLanguageModel(nn.Module):
    """Token embedding -> recurrent layers -> vocabulary logits at every position."""

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        embed_size: int = 128,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.rnn = CELLS[cell](
            embed_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout
        )
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, vocab)."""
        out, _ = self.rnn(self.embed(ids))  # (B, T, hidden)
        return self.head(out)
