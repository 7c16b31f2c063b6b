"""A multilayer perceptron classifier/regressor for tabular data and flattened images.

model = MLP(in_features=64, hidden=[128, 64], num_classes=10)
logits = model(torch.randn(8, 64))   # (8, 10)
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Module):
    """Linear -> activation (-> dropout) blocks, then a linear head; inputs are flattened."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden if hidden is not None else [128]:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) -> (B, num_classes)."""
        return self.net(x.flatten(1))
