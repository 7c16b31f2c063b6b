"""Unstructured and 2:4 pruning, offline: zero a share of every linear layer's weights.

    maas prune smollm2-135m-instruct --method wanda --sparsity 0.5 --calibration valid.txt
    maas prune smollm2-135m-instruct --method 2:4 --calibration valid.txt

- magnitude: the smallest |W| of each layer go (the classic baseline);
- wanda: the smallest |W_ij| * ||X_j|| of each output row go, X being the layer's inputs on calibration
  text (Sun et al., 2023; one shot from the dense model's activations);
- 2:4: in every 4 consecutive weights of a row the 2 lowest-scoring go (Wanda's score with calibration
  text, magnitude without), the pattern sparse tensor cores run.

Every linear layer of the transformer blocks is pruned; embeddings and the LM head are kept. The result
is stored dense (zeros included): it is no smaller and no faster until a sparse format runs it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from maas.compress.calibration import read_calibration
from maas.compress.method import Method, Options, Result, expect
from maas.compress.model import float_state, input_norms, load_float
from maas.compress.source import Source
from maas.errors import InvalidRequestError

log = logging.getLogger("maas.compress")
CALIBRATION_TOKENS = 16384


@dataclass(frozen=True)
class PruneOptions(Options):
    """What unstructured pruning reads: a share to zero, and calibration text when scored against it."""

    def scoring(self) -> tuple[float, Path | None, int]:
        """(sparsity, calibration file or None, calibration tokens)."""
        raise NotImplementedError


@dataclass(frozen=True)
class MagnitudeOptions(PruneOptions):
    """The share of each layer's weights to zero."""

    sparsity: float = 0.5

    def scoring(self) -> tuple[float, Path | None, int]:
        """(sparsity, no calibration, 0)."""
        return self.sparsity, None, 0

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1:
            raise InvalidRequestError(f"--sparsity must lie strictly between 0 and 1; got {self.sparsity}")


@dataclass(frozen=True)
class WandaOptions(MagnitudeOptions):
    """A share of each output row's weights to zero, scored against their inputs on calibration text."""

    calibration: Path | None = None
    calibration_tokens: int = CALIBRATION_TOKENS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration is None:
            raise InvalidRequestError("wanda weighs each weight by its input's size: give --calibration FILE")

    def scoring(self) -> tuple[float, Path | None, int]:
        """(sparsity, calibration file, calibration tokens)."""
        return self.sparsity, self.calibration, self.calibration_tokens


@dataclass(frozen=True)
class TwoFourOptions(PruneOptions):
    """2 of every 4 weights go: scored against calibration text when given, by magnitude without."""

    calibration: Path | None = None
    calibration_tokens: int = CALIBRATION_TOKENS

    def scoring(self) -> tuple[float, Path | None, int]:
        """(one half, calibration file or None, calibration tokens)."""
        return 0.5, self.calibration, self.calibration_tokens


def prunable(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers pruning touches: all but the LM head."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}


def keep_smallest_out(score: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Boolean mask keeping all but the `sparsity` share of lowest scores (per row, or over the matrix)."""
    rows = score if per_row else score.reshape(1, -1)
    k = int(rows.shape[1] * sparsity)
    keep = torch.ones_like(rows, dtype=torch.bool)
    if k:
        drop = rows.topk(k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep.reshape(score.shape)


def keep_n_of_m(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Boolean mask keeping the `n` highest scores of every `m` consecutive weights of a row."""
    N, K = score.shape
    groups = score.reshape(N, K // m, m)
    top = groups.topk(n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(N, K)


def prune_layers(
    layers: dict[str, nn.Linear], method: str, sparsity: float, norms: dict[str, torch.Tensor] | None
) -> dict[str, float]:
    """Zero weights in place; {layer: share of its weights now zero}."""
    out = {}
    for name, layer in tqdm(
        layers.items(), desc=f"pruning ({method})", unit="layer", disable=not sys.stderr.isatty()
    ):
        w = layer.weight.data
        score = w.abs()
        if norms is not None:
            score = score * norms[name][None, :]
        keep = (
            keep_n_of_m(score) if method == "2:4" else keep_smallest_out(score, sparsity, method == "wanda")
        )
        w.mul_(keep)
        out[name] = float((w == 0).float().mean())
    return out


class Unstructured(Method):
    """Zero the lowest-scoring weights of every linear layer of the blocks; the result is stored dense."""

    def __init__(self, name: str, options_type: type[Options], about: str):
        super().__init__(name, "prune", ("llm", "embedding"), options_type, about)

    def apply(self, source: Source, options: Options) -> Result:
        """Score, zero, report."""
        sparsity, calibration, tokens = expect(options, PruneOptions).scoring()
        text, record = (None, {}) if calibration is None else read_calibration(calibration, tokens)
        model = load_float(source.files)
        layers = prunable(model)
        if self.name == "2:4" and any(m.in_features % 4 for m in layers.values()):
            raise InvalidRequestError("2:4 pruning needs layers whose input width is a multiple of 4")
        norms = input_norms(model, source.files, text, tokens) if text is not None else None
        shares = prune_layers(layers, self.name, sparsity, norms)
        pruned = sum(m.weight.numel() for m in layers.values())
        zeros = sum(shares[n] * layers[n].weight.numel() for n in layers)
        params: dict[str, object] = {"method": self.name, "sparsity": sparsity, "layers": len(layers),
                                     "score": "wanda" if norms is not None else "magnitude",
                                     "zero_share_of_pruned_layers": round(zeros / pruned, 6), **record}  # fmt: skip
        config = {**source.files.config, "pruning": {k: params[k] for k in ("method", "sparsity", "score")}}
        tag = "2of4" if self.name == "2:4" else f"{self.name}-{round(sparsity * 100)}"
        log.info("pruned %d layers (%s): %.1f%% of their weights are zero", len(layers), self.name,
                 100 * zeros / pruned)  # fmt: skip
        return Result(config, float_state(model), params, tag)
