"""Structured pruning of a maas CNN: remove whole convolution channels, so every later matrix shrinks.

    maas prune cnn-digits --structured --channels 0.5

Each convolution loses the same share of its output channels: those whose filters have the smallest L1
norm (Li et al., 2017, "Pruning Filters for Efficient ConvNets"; times |gamma| of the batch norm after it,
when there is one). The next convolution loses the matching input channels, the first fully connected
layer the matching columns of the flattened features, and the config records the new channel counts.
"""

from __future__ import annotations

import torch
from torch import nn

from maas.errors import InvalidRequestError
from maas.models.cnn import CNN


def _keep(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, share: float) -> torch.Tensor:
    """Indices (ascending) of the output channels to keep."""
    score = conv.weight.detach().abs().sum((1, 2, 3))
    if bn is not None:
        score = score * bn.weight.detach().abs()
    n = conv.out_channels - round(conv.out_channels * share)
    if n < 1:
        raise InvalidRequestError(
            f"--channels {share} would leave a convolution of {conv.out_channels} with none"
        )
    return torch.sort(torch.topk(score, n).indices).values


def _take(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    t = getattr(module, name)
    if t is None:
        return
    new = t.detach().index_select(dim, index).clone()
    setattr(module, name, nn.Parameter(new, requires_grad=False) if isinstance(t, nn.Parameter) else new)


def prune_conv_channels(model: CNN, share: float) -> list[int]:
    """Remove `share` of every convolution's output channels in place; returns the channel counts left."""
    if not 0 < share < 1:
        raise InvalidRequestError("--channels is a share in (0, 1)")
    layers = list(model.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    first_fc = next(m for m in model.head if isinstance(m, nn.Linear))
    kept = []
    for n, i in enumerate(convs):
        conv = layers[i]
        assert isinstance(conv, nn.Conv2d)
        after = layers[i + 1]
        bn = after if isinstance(after, nn.BatchNorm2d) else None
        before = conv.out_channels
        keep = _keep(conv, bn, share)
        _take(conv, "weight", keep, 0)
        _take(conv, "bias", keep, 0)
        conv.out_channels = len(keep)  # type: ignore[assignment]
        if bn is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                _take(bn, name, keep, 0)
            bn.num_features = len(keep)  # type: ignore[assignment]
        if n + 1 < len(convs):  # the next convolution reads these channels
            nxt = layers[convs[n + 1]]
            assert isinstance(nxt, nn.Conv2d)
            _take(nxt, "weight", keep, 1)
            nxt.in_channels = len(keep)  # type: ignore[assignment]
        else:  # the flattened features are channel-major: each channel owns h * w columns
            hw = first_fc.in_features // before
            cols = (keep[:, None] * hw + torch.arange(hw)).reshape(-1)
            _take(first_fc, "weight", cols, 1)
            first_fc.in_features = len(cols)  # type: ignore[assignment]
        kept.append(len(keep))
    return kept
