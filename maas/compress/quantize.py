"""Weight-only quantization of LMs and encoders, offline: a float model -> int8 / int4 registry version.

    maas quantize smollm2-135m-instruct --method int4 --group-size 32
    config, tensors, report = quantize_files(open_model_files(path), 4, 32)   # round to nearest

Every nn.Linear and vocabulary nn.Embedding whose shape allows it is quantized (an embedding tied to the LM
head reads the head's codes). At 4 bits the vocabulary tables (the token embedding and the LM head) stay at
8 bits, groups of 32, unless `include_head` (llama.cpp's Q4_K_M mix keeps them above 4 bits too). GGUF
Q8_0 / Q4_0 / Q4_1 tensors carry over without loss when the bits and group size match them (group 32). How the other layers are rounded is a `Rounding`: to nearest here, GPTQ
(gptq.py) and AWQ (awq.py) against calibration text. Loading the result is kernels/quantized.py's `convert`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import nn
from tqdm import tqdm

from maas.compress import DEFAULT_GROUP
from maas.compress.method import Method, Options, Result, expect
from maas.compress.model import skeleton, state_name
from maas.compress.source import Source
from maas.errors import InvalidRequestError
from maas.formats import ModelFiles
from maas.kernels.quant_codes import Scheme, eligible, in_features, pack_nibbles, quantize_weight

log = logging.getLogger("maas.compress")
VOCAB_ROWS = 1024  # embeddings with this many rows or more are quantized
VOCAB_SCHEME = Scheme(8, DEFAULT_GROUP)  # the embedding and the LM head under a 4-bit method
Stored = dict[str, torch.Tensor]  # one layer as stored: qweight, scales (and mins)


@dataclass(frozen=True)
class QuantOptions(Options):
    """Round to nearest: weights sharing one scale (`channel`: one per output row)."""

    group_size: int | Literal["channel"] = DEFAULT_GROUP

    def __post_init__(self) -> None:
        if self.group_size != "channel" and (not isinstance(self.group_size, int) or self.group_size < 2):
            raise InvalidRequestError(
                f"--group-size is a number of weights (2 or more) or 'channel', not {self.group_size!r}"
            )

    @property
    def group(self) -> int | None:
        """The group size, None for one scale per output row."""
        return None if self.group_size == "channel" else self.group_size


@dataclass(frozen=True)
class Int4Options(QuantOptions):
    """4-bit codes; the embedding and the LM head stay at 8 bits unless `include_head`."""

    include_head: bool = False


@dataclass(frozen=True)
class CalibratedOptions(Int4Options):
    """Quantization that measures the layers' inputs on calibration text (GPTQ, AWQ)."""

    calibration: Path | None = None
    calibration_tokens: int = 65536

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration is None:
            raise InvalidRequestError("this method measures the layers' inputs: give --calibration FILE")


class Rounding(Protocol):
    """How the layers not carried over are rounded: `tensors` holds the float weights by state-dict name
    (a method may rescale them, norms included); returns the stored tensors per module and a report."""

    def __call__(
        self, tensors: dict[str, torch.Tensor], schemes: dict[str, Scheme]
    ) -> tuple[dict[str, Stored], dict[str, object]]: ...


def round_to_nearest(
    tensors: dict[str, torch.Tensor], schemes: dict[str, Scheme]
) -> tuple[dict[str, Stored], dict[str, object]]:
    """Every layer rounded to nearest."""
    bar = tqdm(schemes.items(), desc="rounding", unit="layer", disable=not sys.stderr.isatty())
    return {m: quantize_weight(tensors[f"{m}.weight"], s) for m, s in bar}, {}


def plan(
    model: nn.Module, bits: int, group_size: int | None, include_head: bool = False
) -> dict[str, Scheme]:
    """{module name: Scheme} for every linear layer and vocabulary embedding the scheme fits (group_size
    None = per channel); small tables (positions, token types) stay float. Below 8 bits the vocabulary
    tables (embeddings, `lm_head`) get VOCAB_SCHEME (per channel where its groups do not fit) unless
    `include_head`."""
    out = {}
    for name, m in model.named_modules():
        vocab = isinstance(m, nn.Embedding) and m.num_embeddings >= VOCAB_ROWS
        if not (vocab or isinstance(m, nn.Linear)):
            continue
        if (vocab or name == "lm_head") and bits < VOCAB_SCHEME.bits and not include_head:
            out[name] = next(
                s for s in (VOCAB_SCHEME, Scheme(VOCAB_SCHEME.bits, in_features(m))) if eligible(m, s)
            )
            continue
        scheme = Scheme(bits, group_size or in_features(m))
        if eligible(m, scheme):
            out[name] = scheme
    return out


def _lossless(files: ModelFiles, schemes: dict[str, Scheme], alias: dict[str, str]) -> dict[str, Stored]:
    """Stored tensors for the layers whose GGUF blocks are already in the asked format (`alias`: a
    tensor's module -> the layer it is quantized as, e.g. a tied embedding -> the head)."""
    if files.format != "gguf":
        return {}
    from maas.formats.gguf import quantized_blocks

    out = {}
    for name, bits, codes, scales, mins in quantized_blocks(files.path):
        module = name.removesuffix(".weight")
        module = alias.get(module, module)
        s = schemes.get(module)
        if s is None or s.bits != bits or s.group_size != 32:
            continue
        q = torch.from_numpy(codes)
        stored = {"qweight": q if bits == 8 else pack_nibbles(q), "scales": torch.from_numpy(scales)}
        if mins is not None:
            stored["mins"] = torch.from_numpy(mins)
        out[module] = stored
    return out


def quantize_files(
    files: ModelFiles,
    bits: int,
    group_size: int | None,
    rounding: Rounding = round_to_nearest,
    method: str = "",
    include_head: bool = False,
) -> tuple[dict[str, object], dict[str, torch.Tensor], dict[str, object]]:
    """(config.json, tensors, report) of the model quantized to `bits` in groups of `group_size` (None: one
    scale per output row; the vocabulary tables at 8 bits unless `include_head`); the layers not carried
    over from GGUF blocks are rounded by `rounding`."""
    if "quantization_config" in files.config:
        raise InvalidRequestError("the model is quantized already; quantize its float parent instead")
    model = skeleton(files)
    schemes = plan(model, bits, group_size, include_head)
    if not any(sc.bits == bits for sc in schemes.values()):
        raise InvalidRequestError(
            f"no layer fits groups of {group_size} weights (each group must divide a layer's input width)"
        )
    wanted = set(model.state_dict())
    tensors = {n: t for name, t in files.iter_tensors() if (n := state_name(name, wanted)) is not None}
    tied = "lm_head" in schemes and "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors
    if tied:  # the head reads the embedding: quantize it once, as the head
        tensors["lm_head.weight"] = tensors.pop("model.embed_tokens.weight")
        schemes.pop("model.embed_tokens", None)
    schemes = {m: s for m, s in schemes.items() if f"{m}.weight" in tensors}
    exact = _lossless(files, schemes, {"model.embed_tokens": "lm_head"} if tied else {})
    stored, report = rounding(tensors, {m: s for m, s in schemes.items() if m not in exact})
    stored.update(exact)
    for module in schemes:
        del tensors[f"{module}.weight"]
        tensors.update({f"{module}.{k}": v for k, v in stored[module].items()})
    spec: dict[str, object] = {
        "quant_method": "maas",
        "method": method or f"int{bits}",
        "group_size": group_size or "channel",
        "modules": {m: s.as_dict() for m, s in schemes.items()},
    }
    if tied:
        spec["tied_embedding"] = {"head": "lm_head", "embedding": "model.embed_tokens"}
    config = {**files.config, "quantization_config": spec}
    counts: dict[str, object] = {"layers": len(schemes), "lossless_from_gguf": len(exact)}
    if any(sc.bits != bits for sc in schemes.values()):
        counts["layers_at_8_bits"] = [m for m, sc in schemes.items() if sc.bits != bits]
    return config, tensors, {**counts, **report}


def tag(name: str, options: QuantOptions, algorithm: str = "rtn") -> str:
    """int4-g32, int8-channel, int4-g32-gptq, int4-g32-awq-head4 (the vocabulary tables at 4 bits too)."""
    bits_name = "int4" if name in ("gptq", "awq") else name
    out = f"{bits_name}-g{options.group}" if options.group else f"{bits_name}-channel"
    out = out if algorithm == "rtn" else f"{out}-{algorithm}"
    return f"{out}-head4" if isinstance(options, Int4Options) and options.include_head else out


def quantized(
    source: Source, name: str, bits: int, options: QuantOptions, rounding: Rounding, algorithm: str,
    record: dict[str, object] | None = None,
) -> Result:  # fmt: skip
    """The Result of quantizing `source` (what RTN, GPTQ and AWQ share)."""
    include_head = isinstance(options, Int4Options) and options.include_head
    config, tensors, report = quantize_files(source.files, bits, options.group, rounding, name, include_head)
    log.info("quantized %s layers to int%d (%s carried over from GGUF blocks)", report["layers"], bits,
             report["lossless_from_gguf"])  # fmt: skip
    params: dict[str, object] = {"method": name, "bits": bits, "group_size": options.group or "channel",
                                 "algorithm": algorithm, **report, **(record or {})}  # fmt: skip
    return Result(config, tensors, params, tag(name, options, algorithm))


class RoundToNearest(Method):
    """int8 (symmetric) or int4 (scale + min) codes, each weight rounded to the nearest level."""

    def __init__(self, name: str, bits: int, about: str):
        super().__init__(
            name, "quantize", ("llm", "embedding"), Int4Options if bits == 4 else QuantOptions, about
        )
        self.bits = bits

    def apply(self, source: Source, options: Options) -> Result:
        """Round every layer to nearest."""
        o = expect(options, QuantOptions)
        return quantized(source, self.name, self.bits, o, round_to_nearest, "rtn")


FLOATS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Cast(Method):
    """Every tensor in one float type (a GGUF's blocks dequantized)."""

    def __init__(self, name: str):
        super().__init__(name, "quantize", ("llm", "embedding"), Options, f"every tensor as {name}")
        self.dtype = FLOATS[name]

    def apply(self, source: Source, options: Options) -> Result:
        """Cast every tensor the model holds."""
        files = source.files
        if "quantization_config" in files.config:
            raise InvalidRequestError("the model is quantized already; quantize its float parent instead")
        wanted = set(skeleton(files).state_dict())
        cast = {n: t.to(self.dtype) for name, t in files.iter_tensors() if (n := state_name(name, wanted))}
        return Result(dict(files.config), cast, {"method": self.name, "layers": 0}, self.name)
