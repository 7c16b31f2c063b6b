"""Structured pruning: remove whole FFN channels and attention heads, so the matrices really shrink.

    maas prune smollm2-135m-instruct --structured --ffn 0.25 --calibration valid.txt

Every layer loses the same number of channels (heads), so the config keeps one intermediate_size
(num_attention_heads). A channel's score is the size of its input to the down projection (on calibration
text; the up projection's row norm without) times the norm of its down-projection column; a query head's
score likewise, at the output projection. Heads go in equal numbers from every KV group (Llama with GQA),
so a share is rounded to whole heads per group. Where a block keeps its FFN layers is the family table's
row (`ffn_inputs`, `ffn_output`). BERT encoders: FFN channels only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maas.compress.calibration import read_calibration
from maas.compress.method import Method, Options, Result, expect
from maas.compress.model import family, float_state, input_norms, load_float
from maas.compress.source import Source
from maas.errors import InvalidRequestError
from maas.models.families import Family

log = logging.getLogger("maas.compress")


@dataclass(frozen=True)
class StructuredOptions(Options):
    """Shares of every block's FFN channels and query heads to remove (at least one of them)."""

    ffn: float = 0.0
    heads: float = 0.0
    calibration: Path | None = None
    calibration_tokens: int = 16384

    def __post_init__(self) -> None:
        if not 0 <= self.ffn < 1 or not 0 <= self.heads < 1 or not (self.ffn or self.heads):
            raise InvalidRequestError("give --ffn and/or --heads, each a share in (0, 1)")


def _blocks(model: Any) -> list[tuple[str, Any]]:
    if hasattr(model, "encoder"):
        return [(f"encoder.layer.{i}", b) for i, b in enumerate(model.encoder.layer)]
    return [(f"model.layers.{i}", b) for i, b in enumerate(model.model.layers)]


def _slice(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A smaller copy of `layer` keeping output `rows` and/or input `cols`."""
    w = layer.weight.data
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    new.weight.data = w.contiguous()
    if layer.bias is not None:
        new.bias.data = (layer.bias.data[rows] if rows is not None else layer.bias.data).contiguous()
    return new.requires_grad_(False)


def _set(block: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, leaf, layer)


def _keep(score: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the `n_keep` highest scores, in their original order."""
    return score.topk(n_keep).indices.sort().values


def prune_ffn(model: nn.Module, row: Family, share: float, norms: dict[str, torch.Tensor] | None) -> int:
    """Remove `share` of every block's FFN channels (where the family table's row says they are); the new
    intermediate size."""
    if not row.ffn_inputs or not row.ffn_output:
        raise InvalidRequestError(
            f"the family table does not say where {row.name} models keep their FFN layers"
        )
    size = 0
    for prefix, block in _blocks(model):
        out = block.get_submodule(row.ffn_output)
        assert isinstance(out, nn.Linear)
        width = out.in_features
        size = width - int(width * share)
        key = f"{prefix}.{row.ffn_output}"
        first = block.get_submodule(row.ffn_inputs[-1])
        assert isinstance(first, nn.Linear)
        feed = norms[key] if norms is not None else first.weight.norm(dim=1)  # (I,)
        keep = _keep(feed * out.weight.norm(dim=0), size)
        for name in row.ffn_inputs:
            layer = block.get_submodule(name)
            assert isinstance(layer, nn.Linear)
            _set(block, name, _slice(layer, rows=keep))
        _set(block, row.ffn_output, _slice(out, cols=keep))
    return size


def prune_heads(model: Any, row: Family, share: float, norms: dict[str, torch.Tensor] | None) -> int:
    """Remove `share` of every decoder block's query heads (equal numbers per KV group); the new head count."""
    if row.kind != "llm" or row.qk_norm == "projection":  # a norm over the whole q projection: not per head
        raise InvalidRequestError(
            f"structured head pruning knows decoder LMs with per-head queries, not {row.name}"
        )
    cfg = model.config
    H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    group = H // KV
    drop = round(group * share)
    if drop < 1 or drop >= group:
        raise InvalidRequestError(
            f"--heads {share} removes {drop} of the {group} query heads of each KV group: choose a share that "
            "removes at least one and keeps at least one"
        )
    for prefix, block in _blocks(model):
        attn = block.self_attn
        o = attn.o_proj
        col = norms[f"{prefix}.self_attn.o_proj"] if norms is not None else attn.q_proj.weight.norm(dim=1)
        score = (col * o.weight.norm(dim=0)).reshape(KV, group, hd).pow(2).sum(-1)  # (KV, group)
        heads = torch.cat([g * group + _keep(score[g], group - drop) for g in range(KV)])  # kept query heads
        dims = (heads[:, None] * hd + torch.arange(hd)).reshape(-1)
        attn.q_proj = _slice(attn.q_proj, rows=dims)
        attn.o_proj = _slice(o, cols=dims)
        attn.n_heads = len(heads)
    return KV * (group - drop)


class Structured(Method):
    """Remove whole FFN channels and attention heads: smaller matrices, the new sizes in the config."""

    def __init__(self) -> None:
        about = "remove whole FFN channels (--ffn) and query heads (--heads) of every block"
        super().__init__("structured", "prune", ("llm", "embedding"), StructuredOptions, about)

    def apply(self, source: Source, options: Options) -> Result:
        """Score channels and heads (against calibration text when given), slice the matrices."""
        o = expect(options, StructuredOptions)
        calibrated = None if o.calibration is None else read_calibration(o.calibration, o.calibration_tokens)
        files = source.files
        row = family(files)
        model = load_float(files)
        before = sum(p.numel() for p in model.parameters())
        norms = input_norms(model, files, calibrated[0], o.calibration_tokens) if calibrated else None
        config = dict(files.config)
        params: dict[str, object] = {"structured": True, "ffn": o.ffn, "heads": o.heads,
                                     "score": "activation" if norms is not None else "magnitude"}  # fmt: skip
        if o.ffn:
            config["intermediate_size"] = params["intermediate_size"] = prune_ffn(model, row, o.ffn, norms)
        if o.heads:
            head_dim = int(getattr(model, "config").head_dim)  # noqa: B009 - the Llama config
            config["num_attention_heads"] = params["attention_heads"] = prune_heads(
                model, row, o.heads, norms
            )
            config["head_dim"] = head_dim  # no longer hidden_size / heads
        after = sum(p.numel() for p in model.parameters())
        params.update(
            parameters_before=before, parameters_after=after, **(calibrated[1] if calibrated else {})
        )
        config["pruning"] = {"structured": True, "ffn": o.ffn, "heads": o.heads}
        tag = "-".join(([f"ffn{round(o.ffn * 100)}"] if o.ffn else []) +
                       ([f"heads{round(o.heads * 100)}"] if o.heads else []))  # fmt: skip
        log.info("structured pruning: %.1fM -> %.1fM parameters", before / 1e6, after / 1e6)
        return Result(config, float_state(model), params, tag)
