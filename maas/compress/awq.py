"""AWQ (Lin et al., 2023): activation-aware weight quantization. The input channels that carry large
activations matter most, so before int4 rounding each is scaled up: W' = W diag(s), with the inverse folded
into the op before, which keeps the model's function and leaves a plain int4 model (same format, same
kernels, nothing for the loader to apply).

    maas quantize smollm2-135m-instruct --method awq --calibration valid.txt

Per scaling site s = mean|x|^alpha (normalised so that max * min = 1), alpha searched over 0, 0.1, ..., 1
for the least output error of the site's layers on the calibration activations: sum over layers of
(W - Q(W s) / s) H (W - Q(W s) / s)^T with H = sum x x^T (compress/model.py, as GPTQ's). alpha = 0 is
round to nearest, so a site's error is never above RTN's. The sites of a block (the Llama block of
maas.models.llama; its norms where the family table's row puts them):

    norm before attention -> q, k, v    the norm's weight takes 1 / s
    norm before the MLP -> gate, up
    v_proj -> o_proj                    v's output rows take 1 / s; with grouped-query attention the query
                                        heads of one key head share a scale (o's inputs are their concatenation)
    up_proj -> down_proj                up's output rows take 1 / s

Then every group's clipping range is searched (shrunk by up to 20%) for the least error under its inputs'
block of H, as AWQ's clipping step. One shot from the float model's activations.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from maas.compress.calibration import read_calibration
from maas.compress.method import Method, Options, Result, expect
from maas.compress.model import Stats, activation_stats, family, load_float
from maas.compress.quantize import CalibratedOptions, Rounding, Stored, quantized
from maas.compress.source import Source
from maas.errors import InvalidRequestError
from maas.formats import ModelFiles
from maas.kernels.quant_codes import Scheme, encode, group_range, pack_nibbles, quantize_weight
from maas.models.families import Family
from maas.models.llama import NORM_NAMES, SelfAttention

log = logging.getLogger("maas.compress")
ALPHAS = tuple(i / 10 for i in range(11))
SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8)
ROWS = 256  # output rows of each layer the alpha search scores (evenly spaced; the error is a sum over rows)
# The norm whose output feeds a block's MLP (the family table does not say where each norm sits)


@dataclass(frozen=True)
class AWQOptions(CalibratedOptions):
    """AWQ: calibration text (fewer tokens than GPTQ serve: only per-channel sizes are searched)."""

    calibration_tokens: int = 16384


@dataclass(frozen=True)
class Site:
    """One scaling site: `prev` (a norm, or a linear: its output rows) takes 1 / s, `layers` (reading prev's
    output) take s on their input columns; v_proj -> o_proj: `kv_heads` key heads, each read by `share`
    query heads."""

    prev: str
    layers: tuple[str, ...]
    kv_heads: int = 0
    share: int = 1


def sites(model: nn.Module, row: Family) -> list[Site]:
    """The scaling sites of a decoder LM's blocks, where the family table's row puts its norms (a site whose
    input is the residual stream, with no norm before it, has nothing to fold into and is left out)."""
    blocks = getattr(getattr(model, "model", None), "layers", None)
    if row.kind != "llm" or not row.ffn_inputs or not isinstance(blocks, nn.ModuleList):
        raise InvalidRequestError(f"AWQ scales the blocks of decoder LMs, not {row.name} models")
    attn_norm, _, mlp_norm, _ = NORM_NAMES[row.norms]
    up = row.ffn_inputs[-1]  # the ungated input: down_proj reads act(gate) * up
    out = []
    for i, block in enumerate(blocks):
        p, attn = f"model.layers.{i}", block.get_submodule("self_attn")
        assert isinstance(attn, SelfAttention)
        if attn_norm is not None:
            out.append(Site(f"{p}.{attn_norm}", tuple(f"{p}.self_attn.{n}_proj" for n in "qkv")))
        out.append(
            Site(f"{p}.self_attn.v_proj", (f"{p}.self_attn.o_proj",), attn.n_kv, attn.n_heads // attn.n_kv)
        )
        if mlp_norm is not None:
            out.append(Site(f"{p}.{mlp_norm}", tuple(f"{p}.{n}" for n in row.ffn_inputs)))
        out.append(Site(f"{p}.{up}", (f"{p}.{row.ffn_output}",)))
    return out


def rounded(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """The values round to nearest stores for `w` (N, K): the same fp16 scales and mins, no packing."""
    N, K = w.shape
    W = w.reshape(N, K // scheme.group_size, scheme.group_size)
    scale, lo = group_range(W, scheme.bits)
    return encode(W, scale.unsqueeze(-1), None if lo is None else lo.unsqueeze(-1))[1].reshape(N, K)


def output_error(w: torch.Tensor, s: torch.Tensor, scheme: Scheme, H: torch.Tensor) -> float:
    """sum over rows of d H d^T, d = w - Q(w diag(s)) / s: the layer's output error on the inputs H sums."""
    d = w - rounded(w * s, scheme) / s
    return float(((d @ H) * d).sum())


def search_scale(
    weights: list[torch.Tensor], schemes: list[Scheme], stats: Stats, kv_heads: int = 0, share: int = 1
) -> tuple[float, torch.Tensor]:
    """(alpha, s) of least output error for layers reading the same inputs (s: (in_features,); for o_proj
    (`kv_heads`), equal across the query heads that read one key head, as v_proj's rows feed them all)."""
    H = stats.outer
    assert H is not None
    x = (stats.absolute / max(stats.tokens, 1)).clamp_min(1e-8)  # (K,) mean |x| per input channel
    best: tuple[float, float, torch.Tensor] = (float("inf"), 0.0, torch.ones_like(x))
    sample = [w[:: max(1, w.shape[0] // ROWS)].float() for w in weights]  # rows are independent: a sample
    for alpha in ALPHAS:
        s = x.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        if kv_heads:
            s = shared(s, kv_heads, share)
        err = sum(output_error(w, s, sc, H) for w, sc in zip(sample, schemes, strict=True))
        if err < best[0]:
            best = (err, alpha, s)
    return best[1], best[2]


def shared(s: torch.Tensor, kv_heads: int, share: int) -> torch.Tensor:
    """o_proj's input scales (heads * head_dim,), averaged over the `share` query heads that read each of the
    `kv_heads` key heads (queries g * share .. (g + 1) * share - 1 read key head g)."""
    return s.view(kv_heads, share, -1).mean(1, keepdim=True).expand(-1, share, -1).reshape(-1)


def clip_round(w: torch.Tensor, scheme: Scheme, H: torch.Tensor) -> Stored:
    """Round to nearest with each group's range shrunk by the factor of SHRINKS that gives the least error
    under the group's block of H (its inputs' x x^T)."""
    N, K = w.shape
    g = scheme.group_size
    G = K // g
    W = w.float().reshape(N, G, g)
    Hb = torch.stack([H[j * g : (j + 1) * g, j * g : (j + 1) * g] for j in range(G)])  # (G, g, g)
    best_err = torch.full((N, G), float("inf"))
    best_scale, best_lo = group_range(W, scheme.bits)
    for shrink in SHRINKS:
        scale, lo = group_range(W, scheme.bits, shrink)
        _, v = encode(W, scale.unsqueeze(-1), None if lo is None else lo.unsqueeze(-1))
        d = W - v
        err = torch.einsum("ngi,gij,ngj->ng", d, Hb, d)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        if lo is not None and best_lo is not None:
            best_lo = torch.where(better, lo, best_lo)
    q, _ = encode(W, best_scale.unsqueeze(-1), None if best_lo is None else best_lo.unsqueeze(-1))
    if scheme.bits == 8:
        return {"qweight": q.to(torch.int8).reshape(N, K), "scales": best_scale}
    assert best_lo is not None
    return {"qweight": pack_nibbles(q.to(torch.uint8).reshape(N, K)), "scales": best_scale, "mins": best_lo}


def fold(tensors: dict[str, torch.Tensor], site: Site, s: torch.Tensor) -> None:
    """Scale the site's layers' input columns by s and divide what `prev` outputs by it (in `tensors`)."""
    for layer in site.layers:
        tensors[f"{layer}.weight"] = tensors[f"{layer}.weight"].float() * s
    s_prev = s.view(site.kv_heads, site.share, -1)[:, 0].reshape(-1) if site.kv_heads else s
    w = tensors[f"{site.prev}.weight"].float()
    tensors[f"{site.prev}.weight"] = w / s_prev if w.dim() == 1 else w / s_prev[:, None]
    bias = tensors.get(f"{site.prev}.bias")
    if bias is not None and w.dim() == 2:
        tensors[f"{site.prev}.bias"] = bias.float() / s_prev


def awq_rounding(files: ModelFiles, text: str, tokens: int) -> Rounding:
    """AWQ's Rounding: measure the sites' inputs, search and fold each site's scales, then round every
    layer with its clipping searched (layers outside the sites: to nearest)."""

    def rounding(
        tensors: dict[str, torch.Tensor], schemes: dict[str, Scheme]
    ) -> tuple[dict[str, Stored], dict[str, object]]:
        model = load_float(files)
        linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        todo = [
            s
            for s in sites(model, family(files))
            if set(s.layers) <= set(schemes) and (s.prev in schemes or s.prev not in linears)
        ]
        stats = activation_stats(model, files, text, tokens, only={s.layers[0] for s in todo}, outer=True)
        del model
        inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (H of its float inputs, s)
        alphas = []
        for site in tqdm(todo, desc="AWQ scales", unit="site", disable=not sys.stderr.isatty()):
            st = stats[site.layers[0]]
            ws = [tensors[f"{n}.weight"] for n in site.layers]
            alpha, s = search_scale(ws, [schemes[n] for n in site.layers], st, site.kv_heads, site.share)
            fold(tensors, site, s)
            alphas.append(alpha)
            assert st.outer is not None
            inputs.update({n: (st.outer, s) for n in site.layers})
        out = {}
        for m, sc in tqdm(schemes.items(), desc="rounding", unit="layer", disable=not sys.stderr.isatty()):
            w = tensors[f"{m}.weight"]
            if m in inputs:
                H, s = inputs[m]
                out[m] = clip_round(w, sc, H / (s[:, None] * s[None, :]))  # the scaled layer's inputs: x / s
            else:
                out[m] = quantize_weight(w, sc)
        mean = sum(alphas) / len(alphas) if alphas else 0.0
        return out, {"awq_sites": len(todo), "awq_alpha_mean": round(mean, 3)}

    return rounding


class AWQ(Method):
    """int4 codes after activation-aware scaling, folded into the ops before (a plain int4 model)."""

    def __init__(self) -> None:
        about = "int4, input channels scaled by their activations on --calibration text before rounding (AWQ)"
        super().__init__("awq", "quantize", ("llm",), AWQOptions, about)

    def apply(self, source: Source, options: Options) -> Result:
        """Scale, fold, round."""
        o = expect(options, AWQOptions)
        assert o.calibration is not None
        text, record = read_calibration(o.calibration, o.calibration_tokens)
        return quantized(
            source, self.name, 4, o, awq_rounding(source.files, text, o.calibration_tokens), "awq", record
        )
