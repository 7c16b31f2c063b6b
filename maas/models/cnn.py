"""A small convolutional classifier: conv/ReLU/max-pool blocks, then fully connected layers.

model = CNN(in_channels=1, image_size=(8, 8), num_classes=10, channels=[16, 32])
logits = model(torch.randn(4, 1, 8, 8))   # (4, 10)
"""

from __future__ import annotations

import torch
from torch import nn


class CNN(nn.Module):
    """Conv blocks (3x3 conv, optional batch norm, ReLU, 2x2 max pool) and an MLP head."""

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int] | list[int],
        num_classes: int,
        channels: list[int] | None = None,
        kernel_size: int = 3,
        hidden: int = 64,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        c, (h, w) = in_channels, image_size
        for out in channels if channels is not None else [16, 32]:
            blocks.append(nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out))
            blocks.append(nn.ReLU())
            if h >= 2 and w >= 2:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU()]
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, num_classes)."""
        return self.head(self.features(x))
