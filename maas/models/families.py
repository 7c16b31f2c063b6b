"""The model-family table: one row per family says what it is and where its code lives.

Formats (which HF `model_type`s and GGUF architectures open as which family), the store
(`kind_of`: llm / embedding / tensor), the zoo and the loaders all read this table; adding a
family is one row here plus its module. Plain data: importing it costs no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["llm", "embedding", "tensor"]
KINDS: tuple[Kind, ...] = ("llm", "embedding", "tensor")
# Where a decoder block's RMSNorms sit: before each sublayer (Llama), before and after each (Gemma 3), or
# after each, on the sublayer's output before the residual add (OLMo 2).
Norms = Literal["pre", "sandwich", "post"]
# RMSNorm on queries and keys before RoPE: none, over each head (Qwen3, Gemma 3), or over the whole
# projection, all heads at once (OLMo 2).
QKNorm = Literal["none", "head", "projection"]


@dataclass(frozen=True)
class Family:
    """One model family: its kind, the names files give it, and its config and module classes."""

    name: str  # what ModelFiles.architecture and the registry's `family` say
    kind: Kind
    model_types: tuple[str, ...] = ()  # config.json `model_type` values that open as this family
    gguf_archs: tuple[str, ...] = ()  # GGUF `general.architecture` values
    module: str = ""  # "package.module:Class" of the nn.Module (imported on use)
    config: str = ""  # "package.module:Class" with a `from_hf(dict)` constructor, when it has one
    # GGUF files: llama.cpp tensor names -> HF names (per-block and top-level), whether llama.cpp
    # permuted the Q/K rows for its RoPE (undone at load), config entries GGUF does not carry.
    gguf_block_names: dict[str, str] = field(default_factory=dict)
    gguf_top_names: dict[str, str] = field(default_factory=dict)
    gguf_qk_permuted: bool = False
    # projections some checkpoints store fused: module name in a layer -> the modules it splits into
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # HF checkpoints store norm weights as `w` in `x * (1 + w)` (Gemma); 1 is added when read
    norm_plus_one: bool = False
    # decoder blocks (the config class's `from_hf` reads these from the row)
    norms: Norms = "pre"
    qk_norm: QKNorm = "none"
    attention_bias: bool = False  # q/k/v projections carry biases unless config.json says otherwise (Qwen2)
    use_sliding_window: bool = True  # a config's sliding_window caps the context unless it says otherwise
    # the feed-forward layers of a block: those whose output rows are its channels, the one whose input
    # columns are (structured pruning)
    ffn_inputs: tuple[str, ...] = ()
    ffn_output: str = ""
    # `maas train` architectures: "package.module:function" building a fresh module from YAML
    # parameters and the training data's shape (the zoo's hook; the arch is the name without "maas-").
    builder: str = ""

    def module_class(self) -> Any:
        """The family's nn.Module class."""
        return _import(self.module)

    def config_class(self) -> Any:
        """The family's config class."""
        return _import(self.config)

    def build(self) -> Any:
        """The family's builder function (`maas train` families)."""
        return _import(self.builder)


_LLAMA_GGUF_PROJECTIONS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_GGUF_BLOCKS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    **_LLAMA_GGUF_PROJECTIONS,
}
_LLAMA_GGUF_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


def _llama(name: str, model_types: tuple[str, ...], gguf_archs: tuple[str, ...], **kw: Any) -> Family:
    """A row whose module is the Llama block (maas.models.llama), as its fields shape it."""
    kw.setdefault("module", "maas.models.llama:LlamaForCausalLM")
    kw.setdefault("config", "maas.models.llama:LlamaConfig")
    kw.setdefault("gguf_block_names", _LLAMA_GGUF_BLOCKS)
    return Family(
        name, "llm", model_types, gguf_archs, gguf_top_names=_LLAMA_GGUF_TOP,
        ffn_inputs=("mlp.gate_proj", "mlp.up_proj"), ffn_output="mlp.down_proj", **kw,
    )  # fmt: skip


def _zoo(arch: str, cls: str) -> Family:
    return Family(
        f"maas-{arch}",
        "tensor",
        (f"maas-{arch}",),
        module=cls,
        builder=f"maas.models.zoo:build_{arch.replace('-', '_')}",
    )


FAMILIES: tuple[Family, ...] = (
    _llama(
        "llama",
        ("llama", "mistral", "smollm"),
        ("llama", "mistral", "smollm"),
        gguf_qk_permuted=True,
        builder="maas.models.zoo:build_llama",  # `maas train` exports it as an HF Llama directory
    ),
    _llama("qwen2", ("qwen2",), ("qwen2",), attention_bias=True, use_sliding_window=False),
    _llama(
        "qwen3",
        ("qwen3",),
        ("qwen3",),
        gguf_block_names={**_LLAMA_GGUF_BLOCKS, **_QK_NORMS},
        qk_norm="head",
        use_sliding_window=False,
    ),
    _llama(
        "phi3",
        ("phi3",),
        ("phi3",),
        gguf_block_names={
            **_LLAMA_GGUF_BLOCKS,
            "attn_qkv": "self_attn.qkv_proj",
            "ffn_up": "mlp.gate_up_proj",
        },
        fused={  # checkpoints fuse q/k/v and gate/up: split when read
            "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
        },
    ),
    _llama(
        "gemma3",
        ("gemma3_text",),
        ("gemma3",),
        module="maas.models.gemma3:Gemma3ForCausalLM",
        config="maas.models.gemma3:Gemma3Config",
        gguf_block_names={
            **_LLAMA_GGUF_BLOCKS,
            **_QK_NORMS,
            "post_attention_norm": "post_attention_layernorm",
            "ffn_norm": "pre_feedforward_layernorm",
            "post_ffw_norm": "post_feedforward_layernorm",
        },
        norm_plus_one=True,  # GGUF files store 1 + w already
        norms="sandwich",
        qk_norm="head",
    ),
    _llama(
        "olmo2",
        ("olmo2",),
        ("olmo2",),
        gguf_block_names={
            **_LLAMA_GGUF_PROJECTIONS,
            **_QK_NORMS,
            "post_attention_norm": "post_attention_layernorm",
            "post_ffw_norm": "post_feedforward_layernorm",
        },
        norms="post",
        qk_norm="projection",
    ),
    Family(
        "bert",
        "embedding",
        ("bert",),
        (),
        "maas.models.bert:BertModel",
        "maas.models.bert:BertConfig",
        ffn_inputs=("intermediate.dense",),
        ffn_output="output.dense",
    ),  # fmt: skip
    _zoo("mlp", "maas.models.mlp:MLP"),
    _zoo("cnn", "maas.models.cnn:CNN"),
    _zoo("rnn", "maas.models.rnn:RNNClassifier"),
    _zoo("rnn-lm", "maas.models.rnn:RNNLanguageModel"),
    Family("onnx", "tensor", ("onnx",)),  # an ONNX graph, run by ONNX Runtime
    Family("torch-export", "tensor", ("torch-export",)),  # a torch.export program (.pt2)
    Family("torchscript", "tensor", ("torchscript",)),  # a TorchScript module (.pt) with a recorded signature
)

# Single-file tensor models, by suffix (a directory says its family in config.json's model_type).
FILE_FAMILIES = {".onnx": "onnx", ".pt2": "torch-export", ".pt": "torchscript", ".ts": "torchscript"}

# Encoders whose registry entries are embedding models even though no row loads them yet.
_OTHER_ENCODERS = frozenset({"roberta", "xlm-roberta", "distilbert", "mpnet", "nomic_bert"})


def by_model_type(model_type: str) -> Family | None:
    """The family a config.json `model_type` opens as (None when no row claims it)."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def by_gguf_arch(arch: str) -> Family | None:
    """The family a GGUF `general.architecture` opens as."""
    return next((f for f in FAMILIES if arch in f.gguf_archs), None)


def by_name(name: str) -> Family | None:
    """A family by its table name."""
    return next((f for f in FAMILIES if f.name == name), None)


def by_config(cfg: dict[str, Any]) -> Family | None:
    """The family of a config dict: its `model_type` as config.json names it, or a family name (GGUF)."""
    model_type = str(cfg.get("model_type", ""))
    return by_model_type(model_type) or by_name(model_type)


def zoo_architectures() -> tuple[str, ...]:
    """The architecture names `maas train` builds (`model.arch`)."""
    return tuple(f.name.removeprefix("maas-") for f in FAMILIES if f.builder)


def kind_of(family: str) -> Kind:
    """'llm', 'embedding' or 'tensor' for a registry family name (unknown names count as LLMs)."""
    f = family.lower()
    row = by_name(f) or by_model_type(f) or by_gguf_arch(f)
    if row is not None:
        return row.kind
    if f.startswith("maas-"):
        return "tensor"
    return "embedding" if f in _OTHER_ENCODERS else "llm"


def supported(kind: Kind | None = None, gguf: bool = False) -> list[str]:
    """Names files may carry for families (of `kind`): model_types, or GGUF architectures."""
    return sorted(
        {n for f in FAMILIES if kind in (None, f.kind) for n in (f.gguf_archs if gguf else f.model_types)}
    )


def _import(ref: str) -> Any:
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)
