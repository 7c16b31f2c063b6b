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
from maas.models.llama import LlamaConfig, LlamaForCausalLM
from maas.models.mlp import MLP
from maas.models.rnn import RNNClassifier, RNNLanguageModel

CLASSIFIERS = ("mlp", "cnn", "rnn")
LANGUAGE_MODELS = ("rnn-lm", "llama")
ARCHITECTURES = CLASSIFIERS + LANGUAGE_MODELS


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
    """A freshly initialised model. Classifiers need `input_shape` (one sample's shape, no batch
    dimension) and `num_classes`; language models need `vocab_size`."""
    p = dict(params)
    try:
        if arch in CLASSIFIERS:
            if input_shape is None or num_classes is None:
                raise MaasError(f"model {arch!r} needs a classification dataset (features and labels)")
            if arch == "mlp":
                n = 1
                for d in input_shape:
                    n *= d
                return MLP(n, num_classes, **p)
            if arch == "cnn":
                if len(input_shape) == 2:
                    input_shape = (1, *input_shape)
                if len(input_shape) != 3:
                    raise MaasError(f"model 'cnn' needs image inputs (C, H, W), the data has {input_shape}")
                return CNN(input_shape[0], input_shape[1:], num_classes, **p)
            if len(input_shape) not in (2, 3):
                raise MaasError(f"model 'rnn' needs sequences (T, F) or images, the data has {input_shape}")
            return RNNClassifier(input_shape[-1], num_classes, **p)
        if arch in LANGUAGE_MODELS:
            if vocab_size is None:
                raise MaasError(f"model {arch!r} needs a text dataset (a tokenizer's vocabulary)")
            if arch == "rnn-lm":
                return RNNLanguageModel(vocab_size, **p)
            m = LlamaForCausalLM(llama_config(p, vocab_size))
            m.apply(_init_llama)
            m.tie_weights()
            return m
    except TypeError as e:  # an unknown or missing parameter in the YAML file
        raise MaasError(f"bad parameters for model {arch!r}: {e}") from None
    raise MaasError(f"unknown model architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")


def _init_llama(m: nn.Module) -> None:
    """GPT-2 style initialisation (normal, std 0.02): nn.Embedding's N(0, 1) makes training slow."""
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
