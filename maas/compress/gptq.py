"""GPTQ (Frantar et al., 2022): round one column at a time and spread each column's rounding error over
the columns not yet rounded, weighted by the inverse Hessian of the layer's inputs (H = sum x x^T on
calibration text), so that the layer's outputs, not its weights, stay close.

    stored = gptq(w, H, Scheme(4, 32))   # the same stored tensors as round to nearest: qweight, scales, mins
    maas quantize smollm2-135m-instruct --method gptq --calibration valid.txt

One shot from the float model's activations (each layer sees float inputs, not its quantized
predecessors' outputs). Group scales (and mins) are fitted to the float weights first, with a clipping
search ("static groups"), so that columns can be rounded loudest input first (act-order). With the codes
fixed, the scales and mins are then solved for by least squares on the output error (as llama.cpp's
importance-weighted block fits do, with the full H), and the columns rounded again against them.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from tqdm import tqdm

from maas.compress.calibration import read_calibration
from maas.compress.method import Method, Options, Result, expect
from maas.compress.model import input_stats, load_float
from maas.compress.quantize import CalibratedOptions, Stored, quantized
from maas.compress.source import Source
from maas.kernels.quant_codes import Scheme, encode, group_range, pack_nibbles, quantize_weight

SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8)
ROUNDS = 3  # rounding passes, each followed by a least-squares refit of the group scales and mins


def _group_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, g) weights -> fp16 scale (N,) and min (N,) (None for symmetric int8): of the ranges shrunk
    towards zero by up to 20%, the one whose rounding error is least."""
    best_err = torch.full((w.shape[0],), float("inf"))
    best_scale, best_lo = group_range(w, bits)
    for shrink in SHRINKS:
        scale, lo = group_range(w, bits, shrink)
        _, value = encode(w, scale[:, None], None if lo is None else lo[:, None])
        err = ((value - w) ** 2).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        if lo is not None and best_lo is not None:
            best_lo = torch.where(better, lo, best_lo)
    return best_scale, best_lo


def gptq(
    w: torch.Tensor,
    H: torch.Tensor,
    scheme: Scheme,
    block: int = 128,
    damp: float = 0.01,
    act_order: bool = True,
    rounds: int = ROUNDS,
) -> dict[str, torch.Tensor]:
    """Quantize (N, K) `w` against (K, K) `H`; the stored tensors (`qweight`, `scales`, `mins` for int4).
    Group scales come from the float weights first ("static groups"), so that columns can then be
    rounded loudest input first (`act_order`); then, `rounds` times: with the codes fixed, the scales (and
    mins) are fitted again to the layer's outputs, and the columns rounded again against them."""
    g = scheme.group_size
    W = w.float().clone()
    dead = torch.diag(H) == 0
    W[:, dead] = 0.0
    params = [_group_params(W[:, j : j + g], scheme.bits) for j in range(0, W.shape[1], g)]
    scales = torch.stack([p[0] for p in params], 1)  # (N, G)
    mins = torch.stack([p[1] for p in params if p[1] is not None], 1) if scheme.bits == 4 else None
    if rounds < 1:
        raise ValueError("GPTQ needs at least one rounding pass")
    for _ in range(rounds):
        codes = _round_columns(W, H, scales, mins, g, block, damp, act_order)
        scales, mins = refit_groups(W, H, codes, scales, mins, g)
    if scheme.bits == 8:
        return {"qweight": codes.to(torch.int8), "scales": scales}
    assert mins is not None
    return {"qweight": pack_nibbles(codes.to(torch.uint8)), "scales": scales, "mins": mins}


def _round_columns(
    w: torch.Tensor,
    H: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor | None,
    g: int,
    block: int,
    damp: float,
    act_order: bool,
) -> torch.Tensor:
    """GPTQ's pass: (N, K) codes (as floats, the columns' own order) against fixed group scales and mins."""
    W = w.clone()
    N, K = W.shape
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(K)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(K, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    codes = torch.zeros(N, K)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            group = int(perm[i1 + i]) // g
            q, value = encode(W1[:, i], scales[:, group], None if mins is None else mins[:, group])
            codes[:, i1 + i] = q
            err = (W1[:, i] - value) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return codes[:, torch.argsort(perm)]  # back to the columns' own order


def refit_groups(
    w: torch.Tensor,
    H: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor | None,
    g: int,
    rows: int = 128,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Least squares with the codes fixed: per row, the group scales (and mins) minimising the output error
    (w - w_hat)^T H (w - w_hat), where w_hat = code * scale + min; a row keeps its old values where the fp16
    solution is not better."""
    N, K = w.shape
    G = K // g
    Hd = H.double()
    Hd = Hd + 1e-6 * torch.diag(Hd).mean() * torch.eye(K, dtype=Hd.dtype)
    Hb = Hd.reshape(G, g, G, g)
    M22 = Hb.sum((1, 3))  # (G, G): H summed over the block of groups a x b
    new_s, new_m = scales.clone(), None if mins is None else mins.clone()
    for r0 in range(0, N, rows):
        r1 = min(r0 + rows, N)
        q, wr = codes[r0:r1].double().reshape(-1, G, g), w[r0:r1].double()  # codes (n, G, g)
        n = r1 - r0
        Hq = torch.einsum("aibj,nbj->naib", Hb, q)  # (n, G, g, G): sum_j H[a i, b j] q[b j]
        M11 = torch.einsum("nai,naib->nab", q, Hq)
        Hw = (wr @ Hd).reshape(n, G, g)
        b1 = (q * Hw).sum(-1)
        if mins is None:
            M, b = M11, b1
        else:
            M21 = Hq.sum(2)  # (n, G, G): [a, b] = sum over i in group a, j in group b of H_ij q_j
            top = torch.cat([M11, M21.transpose(1, 2)], 2)
            M = torch.cat([top, torch.cat([M21, M22.expand(n, G, G)], 2)], 1)
            b = torch.cat([b1, Hw.sum(-1)], 1)
        theta = torch.linalg.solve(M, b.unsqueeze(-1)).squeeze(-1)
        cand_s, cand_m = theta[:, :G].half(), None if mins is None else theta[:, G:].half()
        old_m = None if mins is None else mins[r0:r1]
        better = _output_error(wr, Hd, q, cand_s, cand_m) < _output_error(wr, Hd, q, scales[r0:r1], old_m)
        new_s[r0:r1] = torch.where(better[:, None], cand_s, scales[r0:r1])
        if new_m is not None and cand_m is not None and old_m is not None:
            new_m[r0:r1] = torch.where(better[:, None], cand_m, old_m)
    return new_s, new_m


def _output_error(
    w: torch.Tensor, H: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor | None
) -> torch.Tensor:
    """Per row: (w - w_hat)^T H (w - w_hat) for codes q (n, G, g) with fp16 scales and mins (n, G)."""
    wh = q * scales.double().unsqueeze(-1)
    if mins is not None:
        wh = wh + mins.double().unsqueeze(-1)
    d = w - wh.reshape(w.shape)
    return ((d @ H) * d).sum(-1)


class GPTQ(Method):
    """int4 codes rounded by GPTQ against the layers' inputs on calibration text."""

    def __init__(self) -> None:
        about = "int4, rounded by GPTQ against the layers' inputs on --calibration text"
        super().__init__("gptq", "quantize", ("llm", "embedding"), CalibratedOptions, about)

    def apply(self, source: Source, options: Options) -> Result:
        """Measure every linear layer's inputs (x x^T), then round each by GPTQ against them."""
        o = expect(options, CalibratedOptions)
        assert o.calibration is not None
        text, record = read_calibration(o.calibration, o.calibration_tokens)
        files = source.files

        def rounding(
            tensors: dict[str, torch.Tensor], schemes: dict[str, Scheme]
        ) -> tuple[dict[str, Stored], dict[str, object]]:
            model = load_float(files)
            linears = {  # the 4-bit ones: a vocabulary table kept at 8 bits is rounded to nearest
                n
                for n, m in model.named_modules()
                if isinstance(m, nn.Linear) and n in schemes and schemes[n].bits == 4
            }
            H = input_stats(model, files, text, o.calibration_tokens, outer=True, only=linears)
            del model
            out = {}
            for m, s in tqdm(schemes.items(), desc="GPTQ", unit="layer", disable=not sys.stderr.isatty()):
                w = tensors[f"{m}.weight"]
                out[m] = gptq(w, H.pop(m), s) if m in H else quantize_weight(w, s)
            return out, {"gptq_layers": len(linears)}

        return quantized(source, self.name, 4, o, rounding, "gptq", record)
