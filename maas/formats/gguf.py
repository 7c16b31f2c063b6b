"""GGUF files (llama.cpp): metadata -> HF-style config, tensors dequantized to float32.

python -c "from maas.formats.gguf import open_gguf; print(open_gguf('model.gguf').config)"
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maas.errors import ModelFormatError, UnsupportedModelError
from maas.formats.base import ModelFiles, StoredBlocks, TokenizerSource
from maas.formats.fused import unfuse
from maas.formats.gguf_reader import GGUFFile, type_name
from maas.kernels.blocks import FORMATS
from maas.models.families import Family, by_gguf_arch, supported

# Tensor types we turn into float32. Tested: F32, F16, BF16, Q8_0, Q4_0, Q4_1; the others go through
# the same `gguf` dequantizer.
SUPPORTED_TYPES = {
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
}  # fmt: skip

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def hf_name(row: Family, gguf_name: str) -> str | None:
    """Map a llama.cpp tensor name to the family's HF name (None for tensors we do not use)."""
    if gguf_name in row.gguf_top_names:
        return row.gguf_top_names[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if not m or m.group(2) not in row.gguf_block_names:
        return None
    return f"model.layers.{m.group(1)}.{row.gguf_block_names[m.group(2)]}.{m.group(3)}"


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation so that HF's rotate-half RoPE applies."""
    return torch.from_numpy(_unpermute_np(w.numpy(), n_head))


def _field(reader: GGUFFile, key: str, default: Any = None) -> Any:
    return reader.fields.get(key, default)


def _check_complete(reader: GGUFFile, path: Path) -> None:
    for t in reader.tensors:
        end = t.offset + t.n_bytes
        if end > reader.size:
            raise ModelFormatError(
                f"GGUF file {str(path)!r} is truncated: tensor {t.name!r} needs bytes up to {end}, "
                f"file has {reader.size}"
            )


def _config(reader: GGUFFile, arch: str, row: Family, n_tokens: int) -> dict[str, Any]:
    def k(name: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{name}", default)

    n_heads = int(k("attention.head_count"))
    hidden = int(k("embedding_length"))
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": row.name,
        "hidden_size": hidden,
        "intermediate_size": int(k("feed_forward_length")),
        "num_hidden_layers": int(k("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(k("attention.head_count_kv", n_heads)),
        "head_dim": int(k("attention.key_length", hidden // n_heads)),
        "rms_norm_eps": float(k("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(k("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(k("context_length", 2048)),
        "vocab_size": int(k("vocab_size", n_tokens) or n_tokens),
    }
    window = k("attention.sliding_window")
    if window:  # Phi-3, Mistral: the model caps its context to it
        cfg["sliding_window"] = int(window)
    scaling = k("rope.scaling.type")
    if scaling and scaling != "none":
        cfg["rope_scaling"] = {
            "rope_type": str(scaling),
            "factor": float(k("rope.scaling.factor", 1.0)),
            "original_max_position_embeddings": int(
                k("rope.scaling.original_context_length", cfg["max_position_embeddings"])
            ),
        }
    return cfg


def _tokenizer_source(reader: GGUFFile) -> TokenizerSource:
    keys = [key for key in reader.fields if key.startswith("tokenizer.ggml.")]
    # moved out of the reader, so that the vocabulary (a list of strings as long as it, as Python objects) is
    # freed once the tokenizer is built and the source dropped
    fields = {key.removeprefix("tokenizer.ggml."): reader.fields.pop(key) for key in keys}
    tokens = fields.get("tokens") or []
    bos_id = fields.get("bos_token_id")
    eos_id = fields.get("eos_token_id")
    eos_ids = [int(eos_id)] if eos_id is not None else []
    eot = fields.get("eot_token_id")
    if eot is not None and int(eot) not in eos_ids:
        eos_ids.append(int(eot))
    return TokenizerSource(
        gguf_fields=fields,
        bos_token=tokens[bos_id] if bos_id is not None and bos_id < len(tokens) else None,
        eos_token=tokens[eos_id] if eos_id is not None and eos_id < len(tokens) else None,
        eos_token_ids=eos_ids,
        add_bos_token=bool(fields.get("add_bos_token", False)),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def open_gguf(path: str | Path) -> ModelFiles:
    """Open a GGUF file: validate it, read config and tokenizer; tensors are read lazily."""
    path = Path(path)
    reader = GGUFFile(path)
    arch = _field(reader, "general.architecture")
    if arch is None:
        raise ModelFormatError(f"GGUF file {str(path)!r} has no general.architecture field")
    row = by_gguf_arch(str(arch))
    if row is None:
        raise UnsupportedModelError(
            f"GGUF architecture {arch!r} is not supported (supported: {', '.join(supported(gguf=True))})"
        )
    _check_complete(reader, path)
    for t in reader.tensors:
        if hf_name(row, t.name) is not None and type_name(t.type_id) not in SUPPORTED_TYPES:
            raise UnsupportedModelError(
                f"tensor {t.name!r} in {str(path)!r} has type {type_name(t.type_id)}, which maas cannot "
                f"dequantize (supported: {', '.join(sorted(SUPPORTED_TYPES))})"
            )
    tok = _tokenizer_source(reader)
    n_tokens = len((tok.gguf_fields or {}).get("tokens") or [])
    config = _config(reader, arch, row, n_tokens)
    config["tie_word_embeddings"] = not any(t.name == "output.weight" for t in reader.tensors)
    if not any(t.name == "token_embd.weight" for t in reader.tensors):
        raise ModelFormatError(f"GGUF file {str(path)!r} has no token_embd.weight tensor")

    def iter_tensors(keep_blocks: bool = False) -> Iterator[tuple[str, Any]]:
        import gguf

        for t in reader.tensors:
            name = hf_name(row, t.name)
            if name is None:
                continue
            data = reader.data(t)
            kind = type_name(t.type_id)
            if keep_blocks and kind in FORMATS and len(t.shape) == 2:
                yield name, _stored_blocks(row, config, name, kind, data, t.shape)
                continue
            if kind == "BF16":
                data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(t.shape)
            elif kind not in ("F32", "F16"):
                data = gguf.quants.dequantize(data, gguf.GGMLQuantizationType(t.type_id))
            shape = t.shape
            data = np.asarray(data, dtype=np.float32)
            if not data.flags.writeable:  # memory-mapped F32 tensors: copy out of the map
                data = data.copy()
            w = torch.from_numpy(data).reshape(shape)
            if row.gguf_qk_permuted:  # llama.cpp permutes Llama's Q/K rows for its RoPE; undo that
                if name.startswith("model.layers.") and ".self_attn.q_proj." in name:
                    w = _unpermute(w, config["num_attention_heads"])
                elif name.startswith("model.layers.") and ".self_attn.k_proj." in name:
                    w = _unpermute(w, config["num_key_value_heads"])
            yield name, w

    return ModelFiles(
        path=path,
        format="gguf",
        architecture=row.name,
        config=config,
        iter_tensors=lambda: unfuse(row, config, iter_tensors()) if row.fused else iter_tensors(),
        tokenizer=tok,
        num_bytes=path.stat().st_size,
        iter_stored=lambda: unfuse(row, config, iter_tensors(True)) if row.fused else iter_tensors(True),
        release=reader.release,
    )


def _stored_blocks(
    row: Family, config: dict[str, Any], name: str, kind: str, data: np.ndarray, shape: tuple[int, ...]
) -> StoredBlocks:
    """A block-format tensor as stored: a view of the file's bytes (a copy where rows are re-ordered)."""
    n, k = shape
    raw = data.reshape(n, FORMATS[kind].row_bytes(k))
    if row.gguf_qk_permuted and name.startswith("model.layers."):
        if ".self_attn.q_proj." in name:
            raw = _unpermute_np(raw, config["num_attention_heads"])
        elif ".self_attn.k_proj." in name:
            raw = _unpermute_np(raw, config["num_key_value_heads"])
    with warnings.catch_warnings():  # a read-only view of the mapped file; nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        return StoredBlocks(kind, torch.from_numpy(raw), (n, k))


# Block formats whose codes carry over without loss: bytes per block of 32, bits.
_LOSSLESS = {"Q8_0": 8, "Q4_0": 4, "Q4_1": 4}  # bits


def quantized_blocks(
    path: str | Path,
) -> Iterator[tuple[str, int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """The Q8_0 / Q4_0 / Q4_1 tensors of a GGUF file as they are stored, in HF names and row order:
    (name, bits, codes (N, K), fp16 scales (N, K/32), fp16 mins (N, K/32) or None), where
    w = codes * scale (8 bits, codes int8) or w = codes * scale + min (4 bits, codes 0..15)."""
    reader = GGUFFile(path)
    arch = str(_field(reader, "general.architecture"))
    row = by_gguf_arch(arch)
    assert row is not None, "open_gguf checks the architecture first"
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_head))
    for t in reader.tensors:
        name, kind = hf_name(row, t.name), type_name(t.type_id)
        if name is None or kind not in _LOSSLESS:
            continue
        size, bits = FORMATS[kind].nbytes, _LOSSLESS[kind]
        blocks = reader.data(t).reshape(-1, size)  # (N * K/32, bytes)
        N, K = t.shape
        d = blocks[:, :2].copy().view(np.float16).reshape(N, K // 32)
        if bits == 8:
            codes = blocks[:, 2:].copy().view(np.int8).reshape(N, K)
            mins = None
        else:
            qs = blocks[:, size - 16 :]  # (blocks, 16): element j in the low nibble, j + 16 in the high
            codes = np.concatenate([qs & 0xF, qs >> 4], axis=1).reshape(N, K)
            if kind == "Q4_0":  # w = (q - 8) * d
                mins = (d.astype(np.float32) * -8.0).astype(np.float16)
            else:
                mins = blocks[:, 2:4].copy().view(np.float16).reshape(N, K // 32)
        if row.gguf_qk_permuted and name.startswith("model.layers."):
            n = n_head if ".self_attn.q_proj." in name else n_kv if ".self_attn.k_proj." in name else 0
            if n:
                codes, d = _unpermute_np(codes, n), _unpermute_np(d, n)
                mins = None if mins is None else _unpermute_np(mins, n)
        yield name, bits, codes, d, mins


def _unpermute_np(a: np.ndarray, n_head: int) -> np.ndarray:
    """`_unpermute` for numpy rows of any trailing shape."""
    rows = a.shape[0]
    return a.reshape(n_head, rows // n_head // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
