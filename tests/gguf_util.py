"""Write small GGUF files from a model's state dict, the way llama.cpp's converter lays them out."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from maas.models.families import by_gguf_arch
from maas.models.llama import LlamaForCausalLM
from maas.text.tokenizer import _bytes_to_unicode


def _fuse_phi3(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    out = dict(sd)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        q, k, v = (out.pop(f"{p}self_attn.{n}_proj.weight") for n in "qkv")
        out[f"{p}self_attn.qkv_proj.weight"] = torch.cat([q, k, v])
        g, u = out.pop(f"{p}mlp.gate_proj.weight"), out.pop(f"{p}mlp.up_proj.weight")
        out[f"{p}mlp.gate_up_proj.weight"] = torch.cat([g, u])
    return out


def _gguf_name(name: str, arch: str) -> str:
    """The llama.cpp name of an HF tensor name: the family table's mapping, inverted (Llama's for an
    architecture maas does not know)."""
    row = by_gguf_arch(arch) or by_gguf_arch("llama")
    assert row is not None
    top = {hf: g for g, hf in row.gguf_top_names.items()}
    if name in top:
        return top[name]
    parts = name.split(".")
    layer, mod, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    return f"blk.{layer}.{ {hf: g for g, hf in row.gguf_block_names.items()}[mod] }.{kind}"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(
    path: Path,
    model: LlamaForCausalLM,
    qtype: str = "F32",
    arch: str = "llama",
    sentencepiece: tuple[list[str], list[float], list[int]] | None = None,
    sliding_window: int | None = None,
) -> Path:
    """Save `model` as a GGUF file; 2-D weights in `qtype` (F32, F16, Q8_0, Q4_0, Q4_1). The vocabulary is a
    byte-level BPE one, or `sentencepiece` (tokens, scores, token types) as llama.cpp writes Llama 2's."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    if sliding_window is not None:
        w.add_sliding_window(sliding_window)
    if sentencepiece is not None:
        tokens, scores, types = sentencepiece
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
    else:
        chars = _bytes_to_unicode()
        tokens = [chars[b] for b in range(256)] + ["<eos>", "ab"]
        tokens += [f"<pad{i}>" for i in range(cfg.vocab_size - len(tokens))]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([1] * 256 + [3] + [1] + [3] * (len(tokens) - 258))
        w.add_token_merges(["a b"])
        w.add_eos_token_id(256)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    sd = model.state_dict()
    if arch == "phi3":
        sd = _fuse_phi3(sd, cfg.num_hidden_layers)
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    qt = gguf.GGMLQuantizationType[qtype]
    for name, t in sd.items():
        a = t.detach().float().numpy().copy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            a = _permute(a, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            a = _permute(a, cfg.num_key_value_heads)
        if a.ndim == 2 and qtype != "F32":
            if qtype == "F16":
                w.add_tensor(_gguf_name(name, arch), a.astype(np.float16))
            elif qtype == "BF16":
                bits = (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
                w.add_tensor(_gguf_name(name, arch), bits, raw_shape=a.shape, raw_dtype=qt)
            else:
                w.add_tensor(_gguf_name(name, arch), gguf.quants.quantize(a, qt), raw_dtype=qt)
        else:
            w.add_tensor(_gguf_name(name, arch), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_model(seed: int = 0, **kw: object) -> LlamaForCausalLM:
    """A random tiny Llama with block-aligned shapes (GGUF quants need multiples of 32)."""
    from maas.models.llama import LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig.tiny(**{"vocab_size": 288, "tie_word_embeddings": False, **kw})  # type: ignore[arg-type]
    return LlamaForCausalLM(cfg).eval()
