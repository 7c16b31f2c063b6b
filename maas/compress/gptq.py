"""GPTQ (Frantar et al., 2022): round one column at a time and spread each column's rounding error over
the columns not yet rounded, weighted by the inverse Hessian of the layer's inputs (H = sum x x^T on
calibration text), so that the layer's outputs, not its weights, stay close.

    stored = gptq(w, H, Scheme(4, 32))   # the same stored tensors as round to nearest: qweight, scales, mins

One shot from the float model's activations (each layer sees float inputs, not its quantized
predecessors' outputs). Group scales (and mins) are fitted to the float weights first, with a clipping
search ("static groups"), so that columns can be rounded loudest input first (act-order).
"""

from __future__ import annotations

import torch

from maas.kernels.quantized import Scheme, encode, group_range, pack_nibbles

SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8)


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
) -> dict[str, torch.Tensor]:
    """Quantize (N, K) `w` against (K, K) `H`; the stored tensors (`qweight`, `scales`, `mins` for int4).
    Group scales come from the float weights first ("static groups"), so that columns can then be
    rounded loudest input first (`act_order`)."""
    W = w.float().clone()
    N, K = W.shape
    g = scheme.group_size
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    params = [_group_params(W[:, j : j + g], scheme.bits) for j in range(0, K, g)]
    scales = torch.stack([p[0] for p in params], 1)  # (N, G)
    mins = torch.stack([p[1] for p in params if p[1] is not None], 1) if scheme.bits == 4 else None
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
    codes = codes[:, torch.argsort(perm)]  # back to the columns' own order
    if scheme.bits == 8:
        return {"qweight": codes.to(torch.int8), "scales": scales}
    assert mins is not None
    return {"qweight": pack_nibbles(codes.to(torch.uint8)), "scales": scales, "mins": mins}
