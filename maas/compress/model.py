"""The float model a compression step works on, and the activations it sees on calibration text.

model = load_float(files)                             # an ordinary nn.Module in float32, HF names
norms = input_norms(model, files, text, tokens=8192)  # {linear name: (in_features,) L2 norm of its inputs}
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from maas.compress.evaluate import sentences
from maas.errors import InvalidRequestError
from maas.formats import ModelFiles
from maas.models.decoder import DecoderLM


def skeleton(files: ModelFiles) -> tuple[nn.Module, str]:
    """The model built on the meta device (shapes, no weights) and the prefix its HF tensor names
    may carry that its module names do not."""
    if files.architecture == "bert":
        from maas.models.bert import BertConfig, BertModel

        with torch.device("meta"):
            return BertModel(BertConfig.from_hf(files.config)), "bert."
    from maas.models.architectures import build_decoder

    return build_decoder(files.architecture, files.config)[1], ""


def load_float(files: ModelFiles) -> nn.Module:
    """The model in float32 on the CPU with its weights (a tied LM head shares the embedding), loaded
    the way the serving loaders load it."""
    if "quantization_config" in files.config:
        raise InvalidRequestError("the model is quantized; compress its float parent instead")
    model, _ = skeleton(files)
    if isinstance(model, DecoderLM):
        from maas.engine.llm.loader import load_weights

        load_weights(model, files, torch.float32, torch.device("cpu"))
    else:
        from maas.models.bert import BertModel

        assert isinstance(model, BertModel)
        model.load_hf_state(dict(files.iter_tensors()))
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
    if files.architecture == "bert":
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


@torch.inference_mode()
def input_stats(
    model: nn.Module,
    files: ModelFiles,
    text: str,
    tokens: int = 8192,
    length: int = 512,
    outer: bool = False,
    only: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """{name of every nn.Linear (or those in `only`): the sum over calibration tokens of x * x
    (in_features,), or of the outer product x x^T (in_features, in_features) with `outer`}, x being the
    layer's input."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...], __: torch.Tensor) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            add = x.T @ x if outer else (x * x).sum(0)
            sums[name] = sums[name] + add if name in sums else add

        return record

    layers = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and (only is None or n in only)
    ]
    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    seqs = list(_sequences(files, text, tokens, length))
    if not seqs:
        raise InvalidRequestError("the calibration text holds no tokens")
    try:
        for ids in tqdm(seqs, desc="calibrating", unit="seq", disable=not sys.stderr.isatty()):
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return sums


def input_norms(
    model: nn.Module, files: ModelFiles, text: str, tokens: int = 8192
) -> dict[str, torch.Tensor]:
    """{name of every nn.Linear: (in_features,) L2 norm of its inputs over the calibration tokens}."""
    return {n: s.sqrt() for n, s in input_stats(model, files, text, tokens).items()}
