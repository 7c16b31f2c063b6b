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
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from maas.compress.model import float_state, input_norms, load_float
from maas.compress.output import open_source, read_calibration, save_version
from maas.errors import InvalidRequestError
from maas.store.registry import VersionInfo, parse_ref

log = logging.getLogger("maas.compress")
METHODS = ("magnitude", "wanda", "2:4")


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


def prune(
    name: str,
    method: str,
    sparsity: float = 0.5,
    calibration: str | Path | None = None,
    new_name: str | None = None,
    tokens: int = 16384,
) -> VersionInfo:
    """Prune a model (registry ref, built-in name or path); the result is stored as a registry version."""
    if method not in METHODS:
        raise InvalidRequestError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method == "2:4" and sparsity != 0.5:
        raise InvalidRequestError("2:4 pruning removes exactly half the weights: leave --sparsity at 0.5")
    if not 0 < sparsity < 1:
        raise InvalidRequestError(f"--sparsity must lie strictly between 0 and 1; got {sparsity}")
    if method == "magnitude" and calibration is not None:
        raise InvalidRequestError("magnitude pruning looks at the weights alone: drop --calibration")
    if method == "wanda" and calibration is None:
        raise InvalidRequestError("wanda weighs each weight by its input's size: give --calibration FILE")
    if new_name is not None:
        parse_ref(new_name)
    text, calibrated = read_calibration(calibration, tokens)
    source = open_source(name)
    model = load_float(source.files)
    layers = prunable(model)
    if method == "2:4" and any(m.in_features % 4 for m in layers.values()):
        raise InvalidRequestError("2:4 pruning needs layers whose input width is a multiple of 4")
    norms = input_norms(model, source.files, text, tokens) if text is not None else None
    shares = prune_layers(layers, method, sparsity, norms)
    pruned = sum(m.weight.numel() for m in layers.values())
    zeros = sum(shares[n] * layers[n].weight.numel() for n in layers)
    params: dict[str, object] = {"method": method, "sparsity": sparsity, "layers": len(layers),
                                 "score": "wanda" if norms is not None else "magnitude",
                                 "zero_share_of_pruned_layers": round(zeros / pruned, 6)}  # fmt: skip
    params.update(calibrated)
    config = {**source.files.config, "pruning": {k: params[k] for k in ("method", "sparsity", "score")}}
    suffix = f"{method.replace(':', 'of')}-{round(sparsity * 100)}" if method != "2:4" else "2of4"
    log.info(
        "pruned %d layers (%s): %.1f%% of their weights are zero", len(layers), method, 100 * zeros / pruned
    )
    return save_version(source, config, float_state(model), "prune", params, new_name, suffix)


def prune_structured(
    name: str,
    ffn: float = 0.0,
    heads: float = 0.0,
    calibration: str | Path | None = None,
    new_name: str | None = None,
    tokens: int = 16384,
) -> VersionInfo:
    """Remove FFN channels and/or attention heads (compress/structured.py): smaller matrices, stored as
    a registry version with the new sizes in its config."""
    from maas.compress.structured import prune_ffn, prune_heads

    if not 0 <= ffn < 1 or not 0 <= heads < 1 or not (ffn or heads):
        raise InvalidRequestError("give --ffn and/or --heads, each a share in (0, 1)")
    if new_name is not None:
        parse_ref(new_name)
    text, calibrated = read_calibration(calibration, tokens)
    source = open_source(name)
    family = source.files.architecture
    model = load_float(source.files)
    before = sum(p.numel() for p in model.parameters())
    norms = input_norms(model, source.files, text, tokens) if text is not None else None
    config = dict(source.files.config)
    params: dict[str, object] = {"structured": True, "ffn": ffn, "heads": heads,
                                 "score": "activation" if norms is not None else "magnitude"}  # fmt: skip
    if ffn:
        config["intermediate_size"] = params["intermediate_size"] = prune_ffn(model, family, ffn, norms)
    if heads:
        head_dim = int(getattr(model, "config").head_dim)  # noqa: B009 - the Llama config
        config["num_attention_heads"] = params["attention_heads"] = prune_heads(model, family, heads, norms)
        config["head_dim"] = head_dim  # no longer hidden_size / heads
    after = sum(p.numel() for p in model.parameters())
    params["parameters_before"], params["parameters_after"] = before, after
    params.update(calibrated)
    config["pruning"] = {"structured": True, "ffn": ffn, "heads": heads}
    suffix = "-".join(
        ([f"ffn{round(ffn * 100)}"] if ffn else []) + ([f"heads{round(heads * 100)}"] if heads else [])
    )
    log.info("structured pruning: %.1fM -> %.1fM parameters", before / 1e6, after / 1e6)
    return save_version(source, config, float_state(model), "prune", params, new_name, suffix)
