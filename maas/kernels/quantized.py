"""Weight-only quantized linear layers as stored in the registry: int8 (symmetric) and int4 (scale + min).

    q, s = quantize_int8(w, group_size=32)         # w (N, K) -> int8 (N, K), fp16 scales (N, K/32)
    q, s, m = quantize_int4(w, group_size=32)      # -> uint8 (N, K/2) two codes a byte, fp16 scales, mins
    convert(model, spec)                           # on a meta model: nn.Linear -> QuantLinear per spec (and
                                                   # nn.Embedding, nn.Conv2d: filters as rows)
    prepare(model)                                 # after loading: int8 groups of 32 go to the native q8 kernel,
                                                   # int4 groups of 32 to the GGUF block kernel as Q4_1 blocks

Stored layout (what safetensors holds, per quantized module `m`): `m.qweight`, `m.scales` and, for int4,
`m.mins`; w = q * scale (int8) or w = q * scale + min (int4, q in 0..15; even k in the low nibble). This
holds llama.cpp's Q8_0, Q4_0 and Q4_1 blocks without loss (group 32). Loading never dequantizes and
requantizes: int8 with groups that are a multiple of 32 is re-laid out for kernels/q8_linear.py's kernel,
int4 with groups that are a multiple of 32 as Q4_1 blocks (the same values: w = q * d + m) for
kernels/blocks.py's kernel; everything else runs the torch reference (dequantize the weight, then F.linear).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maas.errors import UnsupportedModelError
from maas.kernels import blocks, q8_linear
from maas.kernels.quant_codes import BITS, Scheme, dequantize, in_features, q4_1_blocks


class QuantLinear(nn.Module):
    """A linear layer whose weight is int8 or int4 codes with per-group scales (and mins for int4)."""

    def __init__(
        self, in_features: int, out_features: int, scheme: Scheme, bias: bool, device: Any = None
    ) -> None:
        super().__init__()
        if scheme.bits not in BITS:
            raise ValueError(f"unsupported bit width {scheme.bits} (choose from 8, 4)")
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        N, K, G = out_features, in_features, in_features // scheme.group_size
        qshape = (N, K) if scheme.bits == 8 else (N, K // 2)
        qdtype = torch.int8 if scheme.bits == 8 else torch.uint8
        self.qweight: torch.Tensor
        self.scales: torch.Tensor
        self.register_buffer("qweight", torch.empty(qshape, dtype=qdtype, device=device))
        self.register_buffer("scales", torch.empty(N, G, dtype=torch.float16, device=device))
        self.mins: torch.Tensor | None
        if scheme.bits == 4:
            self.register_buffer("mins", torch.empty(N, G, dtype=torch.float16, device=device))
        else:
            self.mins = None
        self.bias = nn.Parameter(torch.empty(N, device=device), requires_grad=False) if bias else None
        self._q8: tuple[torch.Tensor, torch.Tensor] | None = None  # the native kernel's layout
        self._q4: torch.Tensor | None = None  # int4 as Q4_1 blocks for the block kernel

    def prepare(self) -> None:
        """Re-lay int8 groups of 32k out for the native q8 kernel, int4 groups of 32k as Q4_1 blocks for the
        block kernel (CPU); the stored copy is dropped."""
        N, K, g = self.out_features, self.in_features, self.scheme.group_size
        if self.qweight.device.type != "cpu":
            return
        if self.scheme.bits == 4 and g % 32 == 0 and self.mins is not None:
            self._q4 = q4_1_blocks(self.qweight, self.scales, self.mins)
            self.qweight = torch.empty(0, dtype=torch.uint8)  # the blocks are the only copy kept
            self.scales, self.mins = torch.empty(0, dtype=torch.float16), torch.empty(0, dtype=torch.float16)
            return
        if self.scheme.bits != 8 or g % q8_linear.BLOCK or N % 8:
            return
        KB = K // q8_linear.BLOCK
        per_block = self.scales.float().repeat_interleave(g // q8_linear.BLOCK, dim=1)  # (N, KB)
        packed = self.qweight.reshape(N // 8, 8, KB, q8_linear.BLOCK).permute(0, 2, 3, 1).contiguous()
        scales = per_block.reshape(N // 8, 8, KB).permute(0, 2, 1).contiguous()  # (NB, KB, 8)
        self._q8 = (packed, scales)
        self.qweight = torch.empty(0, dtype=torch.int8)  # the kernel's copy is the only one kept
        self.scales = torch.empty(0, dtype=torch.float16)

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dequantized (N, K) weight."""
        if self._q8 is not None:
            return q8_linear.dequantize_q8(*self._q8).to(dtype)
        if self._q4 is not None:
            return blocks.dequantize(self._q4, "Q4_1", self.in_features).to(dtype)
        return dequantize(self.qweight, self.scales, self.mins, dtype)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized rows `ids` (*lead,) -> (*lead, K): the lookup of an embedding tied to this layer."""
        flat = ids.reshape(-1)
        if self._q8 is not None:
            packed, scales = self._q8
            rows8, lanes = flat // 8, flat % 8
            q = packed[rows8, :, :, lanes].float()  # (n, KB, 32)
            w = (q * scales[rows8, :, lanes].unsqueeze(-1)).reshape(len(flat), -1)
        elif self._q4 is not None:
            w = blocks.dequantize(self._q4[flat], "Q4_1", self.in_features)
        else:
            mins = self.mins[flat] if self.mins is not None else None
            w = dequantize(self.qweight[flat], self.scales[flat], mins)
        return w.to(dtype).reshape(*ids.shape, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        ext = q8_linear.native() if self._q8 is not None else None
        bias = None if self.bias is None else self.bias.float()
        q4_ext = blocks.native() if self._q4 is not None else None
        if ext is not None and self._q8 is not None:
            packed, scales = self._q8
            y = ext.q8_linear(x2.float().contiguous(), packed, scales, bias).to(x.dtype)
        elif q4_ext is not None and self._q4 is not None:
            y = q4_ext.block_linear(x2.float().contiguous(), self._q4, blocks.FORMATS["Q4_1"].type_id, bias)
            y = y.to(x.dtype)
        else:
            y = F.linear(x2, self.weight(x.dtype), self.bias)
        return y.view(*lead, self.out_features)

    @classmethod
    def concat(cls, parts: list[QuantLinear]) -> QuantLinear:
        """One layer computing `parts` side by side (outputs concatenated), for fused projections."""
        first = parts[0]
        if any(
            p.scheme != first.scheme
            or (p._q8 is None) != (first._q8 is None)
            or (p._q4 is None) != (first._q4 is None)
            for p in parts
        ):
            raise ValueError("only layers quantized the same way can be fused")
        out = cls(first.in_features, sum(p.out_features for p in parts), first.scheme, False, "meta")
        if first._q4 is not None:
            out._q4 = torch.cat([p._q4 for p in parts if p._q4 is not None])
            out.qweight, out.scales, out.mins = first.qweight, first.scales, first.mins
        elif first._q8 is not None:
            out._q8 = (
                torch.cat([p._q8[0] for p in parts if p._q8]),
                torch.cat([p._q8[1] for p in parts if p._q8]),
            )
            out.qweight, out.scales = first.qweight, first.scales
        else:
            out.qweight = torch.cat([p.qweight for p in parts])
            out.scales = torch.cat([p.scales for p in parts])
            out.mins = (
                None if first.mins is None else torch.cat([p.mins for p in parts if p.mins is not None])
            )
        if any(p.bias is not None for p in parts):
            out.bias = nn.Parameter(
                torch.cat([p.bias if p.bias is not None else torch.zeros(p.out_features) for p in parts]),
                requires_grad=False,
            )
        return out

    def extra_repr(self) -> str:
        kernel = (
            "native q8" if self._q8 is not None else "Q4_1 blocks" if self._q4 is not None else "reference"
        )
        return (
            f"{self.in_features}, {self.out_features}, int{self.scheme.bits} "
            f"groups of {self.scheme.group_size}, {kernel}"
        )


class QuantConv2d(QuantLinear):
    """A 2-D convolution whose filters are stored like a quantized linear layer's rows (one row per output
    channel, `in_channels / groups * kh * kw` weights); runs the torch reference (dequantize, then conv2d)."""

    def __init__(self, conv: nn.Conv2d, scheme: Scheme, device: Any = None) -> None:
        super().__init__(in_features(conv), conv.out_channels, scheme, conv.bias is not None, device)
        self.filter_shape = (conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_size)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding mode {conv.padding_mode!r} is not supported")

    def prepare(self) -> None:
        """Filters are dequantized per call: nothing to re-lay out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight(x.dtype).view(self.filter_shape)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"{self.filter_shape}, int{self.scheme.bits} groups of {self.scheme.group_size}, reference"


class QuantEmbedding(QuantLinear):
    """An embedding table stored like a quantized linear layer's weight (one row per token)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        scheme: Scheme,
        device: Any = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(embedding_dim, num_embeddings, scheme, False, device)
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype

    def prepare(self) -> None:
        """Rows are gathered from the stored layout: nothing to re-lay out."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids, self.dtype)


class TiedQuantEmbedding(nn.Module):
    """An embedding that reads its rows from the quantized output projection it is tied to."""

    def __init__(self, head: QuantLinear, dtype: torch.dtype = torch.float32):
        super().__init__()
        self._head = [head]  # a list: not a submodule, so its tensors are stored once (under the head)
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._head[0].rows(ids, self.dtype)


def quantization_spec(config: dict[str, Any]) -> dict[str, Any] | None:
    """config.json's `quantization_config` when maas wrote it; None for a float model; other tools'
    quantization formats (GPTQ, AWQ, bitsandbytes, ...) are refused."""
    spec = config.get("quantization_config")
    if spec is None:
        return None
    if (
        not isinstance(spec, dict)
        or spec.get("quant_method") != "maas"
        or not isinstance(spec.get("modules"), dict)
    ):
        method = spec.get("quant_method") if isinstance(spec, dict) else None
        raise UnsupportedModelError(
            f"the model is quantized with {method or 'an unknown method'!r}; maas loads float models and its "
            "own int8/int4 versions (`maas quantize`)"
        )
    return spec


def spec_schemes(spec: dict[str, Any]) -> dict[str, Scheme]:
    """config.json's quantization_config -> {module name: Scheme}."""
    return {name: Scheme(int(s["bits"]), int(s["group_size"])) for name, s in spec["modules"].items()}


def convert(model: nn.Module, spec: dict[str, Any], dtype: torch.dtype = torch.float32) -> nn.Module:
    """Swap the layers `spec` names for QuantLinear / QuantEmbedding / QuantConv2d (on the meta device, before
    weights are assigned); an embedding tied to a quantized head (`spec["tied_embedding"]`) reads the head's
    rows."""
    for name, scheme in spec_schemes(spec).items():
        old = model.get_submodule(name)
        new: nn.Module
        if isinstance(old, nn.Linear):
            new = QuantLinear(old.in_features, old.out_features, scheme, old.bias is not None, "meta")
        elif isinstance(old, nn.Embedding):
            new = QuantEmbedding(old.num_embeddings, old.embedding_dim, scheme, "meta", dtype)
        elif isinstance(old, nn.Conv2d):
            new = QuantConv2d(old, scheme, "meta")
        else:
            raise ValueError(
                f"{name!r} is a {type(old).__name__}, not a linear layer, convolution or embedding"
            )
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
    tied = spec.get("tied_embedding")
    if tied:
        head = model.get_submodule(tied["head"])
        assert isinstance(head, QuantLinear)
        parent, _, leaf = str(tied["embedding"]).rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, TiedQuantEmbedding(head, dtype))
    return model


def prepare(model: nn.Module) -> None:
    """After loading: hand every eligible QuantLinear to the native kernel."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.prepare()


def parameter_count(model: nn.Module) -> int:
    """Weights of the model, quantized ones included (counted as the weights they stand for)."""
    q = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear))
    return q + sum(p.numel() for p in model.parameters())


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of the quantized layers' codes and scales as they sit in memory."""
    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            ts = list(m._q8) if m._q8 is not None else [m.qweight, m.scales]
            ts += [m.mins] if m.mins is not None else []
            ts += [m._q4] if m._q4 is not None else []
            total += sum(t.numel() * t.element_size() for t in ts)
    return total
