"""Evaluation: perplexity of an LM, accuracy of a classifier, cosine of an encoder to a reference.

lm = load_lm("model.gguf", device="cpu", dtype="float32")
r = perplexity(lm, open("test.txt").read(), context=512, stride=256)   # r.perplexity, r.tokens
a = accuracy(load_exported("cnn-dir"), x_test, y_test)               # a.accuracy, a.loss
a = accuracy(onnx_classifier("cnn-onnx-dir"), x_raw, y_test)          # the same, the graph on ONNX Runtime
c = cosine(quantized.embed_texts, original.embed_texts, sentences(text, 1000), "all-minilm-l6-v2")
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from maas.engine.llm.loader import LoadedLM
from maas.errors import InvalidRequestError


@dataclass(frozen=True)
class Perplexity:
    """exp(mean negative log-likelihood) over `tokens` scored tokens."""

    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int
    context: int
    stride: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form (also what the registry stores)."""
        return {"perplexity": self.perplexity, "nll": self.nll, "tokens": self.tokens,
                "context": self.context, "stride": self.stride}  # fmt: skip


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over n tokens: every token but the first
    is scored exactly once; a window scores at most `stride` tokens and gives each the rest of its
    `context` tokens as history (the whole text so far near the start)."""
    out: list[tuple[int, int, int]] = []
    first = 1
    while first < n:
        end = min(first + stride, first - 1 + context, n)  # the window holds first-1 .. end-1
        begin = max(0, end - context)
        out.append((begin, end, first))
        first = end
    return out


@torch.inference_mode()
def perplexity(
    lm: LoadedLM, text: str, context: int = 512, stride: int = 256, limit: int | None = None
) -> Perplexity:
    """Sliding-window perplexity of `text` (its first `limit` tokens) under `lm`."""
    if not 0 < stride <= context:
        raise InvalidRequestError(f"stride must be within 1..context ({context}); got {stride}")
    max_len = int(getattr(lm.config, "max_position_embeddings", context))
    if context > max_len:
        raise InvalidRequestError(f"context {context} is longer than the model's {max_len} positions")
    ids = lm.tokenizer.encode(text, add_special_tokens=True)
    if limit is not None:
        ids = ids[:limit]
    if len(ids) < 2:
        raise InvalidRequestError("the text has fewer than 2 tokens: nothing to score")
    tokens = torch.tensor(ids, device=lm.device)
    total, scored = 0.0, 0
    spans = windows(len(ids), context, stride)
    bar = tqdm(spans, desc="perplexity", unit="window", disable=not sys.stderr.isatty())
    for begin, end, first in bar:
        logits = lm.model(tokens[begin:end][None])[0].float()  # (T, V)
        logp = torch.log_softmax(logits[first - 1 - begin : end - 1 - begin], dim=-1)  # predicts first..end-1
        target = tokens[first:end]
        total -= float(logp.gather(1, target[:, None]).sum())
        scored += end - first
        bar.set_postfix(ppl=f"{math.exp(total / scored):.2f}")
    nll = total / scored
    return Perplexity(math.exp(nll), nll, scored, context, stride)


@dataclass(frozen=True)
class Accuracy:
    """A classifier's accuracy and mean cross-entropy over `examples` labelled examples."""

    accuracy: float
    loss: float
    examples: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form (also what the registry stores)."""
        return {"accuracy": self.accuracy, "loss": self.loss, "examples": self.examples}


@torch.inference_mode()
def onnx_classifier(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX classifier graph as a function of a batch of inputs -> its first output (the logits), run by
    ONNX Runtime on the CPU."""
    import onnxruntime as ort

    from maas.formats.onnx import onnx_file

    session = ort.InferenceSession(str(onnx_file(path)), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.float().numpy()})[0])

    return run


@torch.no_grad()
def accuracy(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch: int = 256
) -> Accuracy:
    """Top-1 accuracy and mean cross-entropy of `model`'s logits on inputs `x` with labels `y`."""
    if len(y) == 0:
        raise InvalidRequestError("there are no labelled examples to score")
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch):
        logits = model(x[i : i + batch]).float()  # (B, classes)
        target = y[i : i + batch]
        correct += int((logits.argmax(-1) == target).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    return Accuracy(correct / len(y), loss / len(y), len(y))


@dataclass(frozen=True)
class Cosine:
    """How closely an encoder's sentence vectors follow a reference encoder's."""

    cosine: float  # mean over sentences
    cosine_min: float
    sentences: int
    reference: str

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready form (also what the registry stores)."""
        return {"cosine": self.cosine, "cosine_min": self.cosine_min, "sentences": self.sentences,
                "reference": self.reference}  # fmt: skip


def sentences(text: str, limit: int | None = None) -> list[str]:
    """The non-empty lines of `text` (WikiText's headings included), the first `limit` of them."""
    out = [s.strip() for s in text.splitlines() if s.strip()]
    return out[:limit] if limit is not None else out


def cosine(
    embed: Callable[[list[str]], Any], reference: Callable[[list[str]], Any], texts: list[str], name: str
) -> Cosine:
    """Mean and least cosine similarity between two encoders' vectors of the same sentences."""
    if not texts:
        raise InvalidRequestError("the text has no sentences to embed")
    a = torch.as_tensor(embed(texts), dtype=torch.float32)
    b = torch.as_tensor(reference(texts), dtype=torch.float32)
    c = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return Cosine(float(c.mean()), float(c.min()), len(texts), name)
