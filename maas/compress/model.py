"""The float model a compression step works on, and the activations it sees on calibration text.

model = load_float(files)                             # an ordinary nn.Module in float32, HF names
norms = input_norms(model, files, text, tokens=8192)  # {linear name: (in_features,) L2 norm of its inputs}
stats = activation_stats(model, files, text, 8192, only={"model.layers.0.mlp.down_proj"}, outer=True)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from maas.compress.evaluate import sentences
from maas.errors import InvalidRequestError, UnsupportedModelError
from maas.formats import ModelFiles
from maas.models.decoder import DecoderLM
from maas.models.families import Family, by_name


def family(files: ModelFiles) -> Family:
    """The family table's row for the files' architecture."""
    row = by_name(files.architecture)
    if row is None:
        raise UnsupportedModelError(f"no family {files.architecture!r} in the family table")
    return row


def skeleton(files: ModelFiles) -> nn.Module:
    """The model built on the meta device (shapes, no weights)."""
    row = family(files)
    if row.kind == "llm":
        from maas.models.architectures import build_decoder

        return build_decoder(row.name, files.config)[1]
    if row.kind != "embedding" or not row.module or not row.config:
        raise UnsupportedModelError(f"{row.name} models cannot be compressed as LMs or encoders")
    with torch.device("meta"):
        module: nn.Module = row.module_class()(row.config_class().from_hf(files.config))
    return module


def state_name(name: str, wanted: set[str]) -> str | None:
    """The model's state-dict name for a file's tensor name (None when the model holds no such tensor); a
    checkpoint's names may carry a leading prefix its modules do not (sentence-transformers' `bert.`)."""
    if name in wanted:
        return name
    short = name.partition(".")[2]
    return short if short in wanted else None


def load_float(files: ModelFiles) -> nn.Module:
    """The model in float32 on the CPU with its weights (a tied LM head shares the embedding), loaded
    the way the serving loaders load it."""
    if "quantization_config" in files.config:
        raise InvalidRequestError("the model is quantized; compress its float parent instead")
    model = skeleton(files)
    if isinstance(model, DecoderLM):
        from maas.engine.llm.loader import load_weights

        load_weights(model, files, torch.float32, torch.device("cpu"))
    else:
        load_hf_state: Callable[[dict[str, torch.Tensor]], None] = getattr(model, "load_hf_state")  # noqa: B009
        load_hf_state(dict(files.iter_tensors()))
        model = model.float()
    return model.eval().requires_grad_(False)


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors to store (a tied LM head is stored once, as the embedding)."""
    state = model.state_dict()
    head, embed = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
    if head is not None and embed is not None and head.data_ptr() == embed.data_ptr():
        del state["lm_head.weight"]
    return {k: v.contiguous() for k, v in state.items()}


def _sequences(files: ModelFiles, text: str, tokens: int, length: int) -> Iterator[torch.Tensor]:
    """(1, T) token-id sequences from `text`, `tokens` in all: windows of `length` for an LM, one line
    (up to `length` tokens) at a time for an encoder."""
    from maas.text.tokenizer import Tokenizer

    tok = Tokenizer.from_source(files.tokenizer)
    if family(files).kind == "embedding":
        n = 0
        for line in sentences(text):
            if n >= tokens:
                return
            ids = tok.encode_batch([line])[0][:length]
            n += len(ids)
            yield torch.tensor([ids])
        return
    ids = tok.encode(text)[:tokens]
    for i in range(0, len(ids) - 1, length):
        yield torch.tensor([ids[i : i + length]])


@dataclass
class Stats:
    """Sums over calibration tokens of a linear layer's input x: x * x and |x| (in_features,), and x x^T
    (in_features, in_features) when asked for."""

    tokens: int
    square: torch.Tensor
    absolute: torch.Tensor
    outer: torch.Tensor | None


class _Done(Exception):
    """Raised by a hook once every layer asked for has seen its input: the rest of the forward is skipped."""


@torch.inference_mode()
def activation_stats(
    model: nn.Module, files: ModelFiles, text: str, tokens: int = 8192, length: int = 512,
    only: set[str] | None = None, outer: bool = False,
) -> dict[str, Stats]:  # fmt: skip
    """{name of every nn.Linear (or those in `only`): Stats of its inputs over the calibration text}."""
    sums: dict[str, Stats] = {}
    layers = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and (only is None or n in only)
    ]
    seen: set[str] = set()

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()  # (T, K)
            s = sums.get(name)
            if s is None:
                s = sums[name] = Stats(0, torch.zeros(x.shape[1]), torch.zeros(x.shape[1]), None)
            s.tokens += x.shape[0]
            s.square += (x * x).sum(0)
            s.absolute += x.abs().sum(0)
            if outer:
                s.outer = x.T @ x if s.outer is None else s.outer + x.T @ x
            seen.add(name)
            if only is not None and len(seen) == len(layers):
                raise _Done  # every layer asked for has its input: the rest of this sequence is not needed

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers]
    seqs = list(_sequences(files, text, tokens, length))
    if not seqs:
        raise InvalidRequestError("the calibration text holds no tokens")
    try:
        for ids in tqdm(seqs, desc="calibrating", unit="seq", disable=not sys.stderr.isatty()):
            seen.clear()
            with contextlib.suppress(_Done):
                model(ids)
    finally:
        for h in handles:
            h.remove()
    return sums


def input_stats(
    model: nn.Module, files: ModelFiles, text: str, tokens: int = 8192, outer: bool = False,
    only: set[str] | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """{name of every nn.Linear (or those in `only`): the sum over calibration tokens of x * x
    (in_features,), or of the outer product x x^T (in_features, in_features) with `outer`}."""
    stats = activation_stats(model, files, text, tokens, only=only, outer=outer)
    return {n: (s.outer if outer and s.outer is not None else s.square) for n, s in stats.items()}


def input_norms(
    model: nn.Module, files: ModelFiles, text: str, tokens: int = 8192
) -> dict[str, torch.Tensor]:
    """{name of every nn.Linear: (in_features,) L2 norm of its inputs over the calibration tokens}."""
    return {n: s.sqrt() for n, s in input_stats(model, files, text, tokens).items()}
