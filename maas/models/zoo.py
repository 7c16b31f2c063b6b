"""Build a model of the zoo from its architecture name and plain parameters (as a YAML file gives).

    model = build("cnn", {"channels": [16, 32]}, input_shape=(1, 8, 8), num_classes=10)

Architectures: `mlp`, `cnn`, `rnn` (sequence classifier; `cell: rnn|lstm|gru`), `rnn-lm`
(recurrent language model) and `llama` (a Llama-family Transformer LM from scratch). The same
name and parameters rebuild the model from a saved directory.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from maas.errors import MaasError
from maas.models.cnn import CNN
from maas.models.families import FAMILIES, zoo_architectures
from maas.models.llama import LlamaConfig, LlamaForCausalLM
from maas.models.mlp import MLP
from maas.models.rnn import RNNClassifier, RNNLanguageModel

ARCHITECTURES = zoo_architectures()  # the family table's rows with a builder


def llama_config(params: dict[str, Any], vocab_size: int) -> LlamaConfig:
    """A small Llama config from YAML parameters (HF names; defaults make a ~1M-parameter model)."""
    hidden = int(params.get("hidden_size", 128))
    heads = int(params.get("num_attention_heads", 4))
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(params.get("intermediate_size", hidden * 3)),
        num_hidden_layers=int(params.get("num_hidden_layers", 2)),
        num_attention_heads=heads,
        num_key_value_heads=int(params.get("num_key_value_heads", heads)),
        head_dim=hidden // heads,
        rms_norm_eps=float(params.get("rms_norm_eps", 1e-5)),
        rope_theta=float(params.get("rope_theta", 10000.0)),
        max_position_embeddings=int(params.get("max_position_embeddings", 1024)),
        tie_word_embeddings=bool(params.get("tie_word_embeddings", True)),
    )


def build(
    arch: str,
    params: dict[str, Any],
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    vocab_size: int | None = None,
) -> nn.Module:
    """A freshly initialised model of a `maas train` architecture (the family table's builder).
    Classifiers need `input_shape` (one sample's shape, no batch dimension) and `num_classes`;
    language models need `vocab_size`."""
    row = next((f for f in FAMILIES if f.builder and f.name.removeprefix("maas-") == arch), None)
    if row is None:
        raise MaasError(f"unknown model architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    try:
        model: nn.Module = row.build()(
            arch, dict(params), input_shape=input_shape, num_classes=num_classes, vocab_size=vocab_size
        )
    except TypeError as e:  # an unknown or missing parameter in the YAML file
        raise MaasError(f"bad parameters for model {arch!r}: {e}") from None
    return model


def _classifier(
    arch: str, input_shape: tuple[int, ...] | None, num_classes: int | None
) -> tuple[tuple[int, ...], int]:
    if input_shape is None or num_classes is None:
        raise MaasError(f"model {arch!r} needs a classification dataset (features and labels)")
    return input_shape, num_classes


def _vocab(arch: str, vocab_size: int | None) -> int:
    if vocab_size is None:
        raise MaasError(f"model {arch!r} needs a text dataset (a tokenizer's vocabulary)")
    return vocab_size


def build_mlp(arch: str, p: dict[str, Any], *, input_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None, vocab_size: int | None = None) -> nn.Module:  # fmt: skip
    """An MLP over the flattened input."""
    shape, classes = _classifier(arch, input_shape, num_classes)
    n = 1
    for d in shape:
        n *= d
    return MLP(n, classes, **p)


def build_cnn(arch: str, p: dict[str, Any], *, input_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None, vocab_size: int | None = None) -> nn.Module:  # fmt: skip
    """A CNN over (C, H, W) images ((H, W) gets one channel)."""
    shape, classes = _classifier(arch, input_shape, num_classes)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise MaasError(f"model 'cnn' needs image inputs (C, H, W), the data has {shape}")
    return CNN(shape[0], shape[1:], classes, **p)


def build_rnn(arch: str, p: dict[str, Any], *, input_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None, vocab_size: int | None = None) -> nn.Module:  # fmt: skip
    """A recurrent classifier over (T, F) sequences or images read row by row."""
    shape, classes = _classifier(arch, input_shape, num_classes)
    if len(shape) not in (2, 3):
        raise MaasError(f"model 'rnn' needs sequences (T, F) or images, the data has {shape}")
    return RNNClassifier(shape[-1], classes, **p)


def build_rnn_lm(arch: str, p: dict[str, Any], *, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None, vocab_size: int | None = None) -> nn.Module:  # fmt: skip
    """A recurrent language model."""
    return RNNLanguageModel(_vocab(arch, vocab_size), **p)


def build_llama(arch: str, p: dict[str, Any], *, input_shape: tuple[int, ...] | None = None,
                num_classes: int | None = None, vocab_size: int | None = None) -> nn.Module:  # fmt: skip
    """A Llama-family Transformer LM from scratch (GPT-2 initialisation, tied embeddings by default)."""
    m = LlamaForCausalLM(llama_config(p, _vocab(arch, vocab_size)))
    m.apply(_init_llama)
    m.tie_weights()
    return m


def _init_llama(m: nn.Module) -> None:
    """GPT-2 style initialisation (normal, std 0.02): nn.Embedding's N(0, 1) makes training slow."""
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
