"""Structured pruning of a maas CNN: remove whole convolution channels, so every later matrix shrinks.

    maas prune cnn-digits --structured --channels 0.5

Each convolution loses the same share of its output channels: those whose filters have the smallest L1
norm (Li et al., 2017, "Pruning Filters for Efficient ConvNets"; times |gamma| of the batch norm after it,
when there is one). The next convolution loses the matching input channels, the first fully connected
layer the matching columns of the flattened features, and the config records the new channel counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from maas.compress.method import Method, Options, Result, expect
from maas.compress.source import Source
from maas.errors import InvalidRequestError
from maas.models.cnn import CNN

log = logging.getLogger("maas.compress")


@dataclass(frozen=True)
class ChannelOptions(Options):
    """The share of every convolution's output channels to remove."""

    channels: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.channels < 1:
            raise InvalidRequestError("--channels is a share in (0, 1)")


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


class ConvChannels(Method):
    """Structured pruning of a maas CNN: a share of every convolution's channels, smallest filters first."""

    def __init__(self) -> None:
        about = "maas CNNs: remove a share of every convolution's channels (--channels)"
        super().__init__("structured", "prune", ("tensor",), ChannelOptions, about)

    def apply(self, source: Source, options: Options) -> Result:
        """Remove the channels; the smaller model with the new channel counts in its config."""
        from maas.models.exported import load_exported, read_meta

        o = expect(options, ChannelOptions)
        source.require_registry()
        meta = read_meta(source.path) if source.path.is_dir() else {}
        if meta.get("architecture") != "cnn" or "quantization_config" in meta:
            raise InvalidRequestError(
                f"{source.found.source!r} is not a float maas CNN: --channels prunes those"
            )
        model = load_exported(source.path)
        assert isinstance(model, CNN)
        before = sum(p.numel() for p in model.parameters())
        kept = prune_conv_channels(model, o.channels)
        after = sum(p.numel() for p in model.parameters())
        config = {**meta, "params": {**meta.get("params", {}), "channels": kept}}
        config["pruning"] = {"structured": True, "channels": o.channels}
        params: dict[str, object] = {"structured": True, "channels": o.channels, "channels_after": kept,
                                     "score": "filter L1 norm", "parameters_before": before,
                                     "parameters_after": after}  # fmt: skip
        log.info("structured pruning: %d -> %d parameters (channels %s)", before, after, kept)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        return Result(config, state, params, f"channels{round(o.channels * 100)}")
