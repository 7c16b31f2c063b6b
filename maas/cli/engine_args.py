"""Engine flags shared by `serve` and `run`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from maas.config import get_settings

if TYPE_CHECKING:
    from maas.engine.llm.engine import EngineConfig


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Capacity and device flags (defaults from MAAS_* settings)."""
    s = get_settings()
    g = p.add_argument_group("engine")
    g.add_argument(
        "--max-num-seqs",
        type=int,
        default=s.max_num_seqs,
        help="sequences decoded together (default %(default)s)",
    )
    g.add_argument(
        "--max-model-len",
        type=int,
        default=s.max_model_len,
        help="prompt + output limit in tokens (default %(default)s)",
    )
    g.add_argument(
        "--kv-cache-tokens",
        type=int,
        default=s.kv_cache_tokens,
        help="KV-cache budget in tokens; 0 = max-num-seqs x max-model-len, at most 32768 (default %(default)s)",
    )
    g.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=s.max_num_batched_tokens,
        help="tokens per step; long prompts are prefilled in chunks of this size (default %(default)s)",
    )
    g.add_argument("--device", default=s.device, help="auto, cpu or cuda (default %(default)s)")
    g.add_argument("--dtype", default=s.dtype, help="auto, float32, bfloat16, float16 (default %(default)s)")
    g.add_argument(
        "--weights",
        default="auto",
        choices=["auto", "file", "float32", "float16", "q8", "int8"],
        help="CPU linear-layer weights. auto (default): a GGUF's block formats as stored (file), a float "
        "model's as q8; file: GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K blocks computed as stored (exact "
        "values, native AVX2 kernel); q8: 8-bit blocks of 32 (native AVX2 kernel); float16 (fbgemm-packed; "
        "the default where the kernels cannot be compiled); float32 (exact); int8 (fbgemm dynamic, lossy, "
        "experimental)",
    )
    g.add_argument("--threads", type=int, default=s.threads, help="CPU threads for torch; 0 = all cores")
    g.add_argument(
        "--no-fused-decode",
        dest="fused_decode",
        action="store_false",
        help="run decode and prefill through the PyTorch modules instead of the native decoder (decode: one "
        "call for all layers, prefill: three a layer, the attention native too; used for GGUF-block and "
        "float32 models on the CPU)",
    )
    g.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=["auto", "float16", "bfloat16", "float32"],
        help="what the KV cache stores keys and values as. auto (default): float16 where the native decoder "
        "runs (GGUF-block and float32 models on the CPU: half the memory of float32), the model's dtype "
        "otherwise",
    )
    g.add_argument(
        "--activations",
        default="auto",
        choices=["auto", "int16", "float32"],
        help="what GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K layers multiply their weights with. auto "
        "(default): int16 where the CPU has AVX-512 VNNI (each run of 32 activations rounded to 16-bit "
        "integers with a float scale; integer dot products, AMX for many rows), float32 elsewhere; "
        "float32: the activations as they are (slower)",
    )
    g.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        help="recompute every prompt instead of reusing the KV of prefixes seen before",
    )
    g.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=4096,
        help="tokens the prefix cache holds, least recently used given up first; its memory comes on top of "
        "the KV cache's, committed as it fills (default %(default)s)",
    )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """EngineConfig from parsed flags."""
    from maas.engine.llm.engine import EngineConfig

    return EngineConfig(
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        kv_cache_tokens=args.kv_cache_tokens,
        max_num_batched_tokens=args.max_num_batched_tokens,
        device=args.device,
        dtype=args.dtype,
        weights=args.weights,
        threads=args.threads,
        prefix_caching=args.prefix_caching,
        fused_decode=args.fused_decode,
        prefix_cache_tokens=args.prefix_cache_tokens,
        kv_cache_dtype=args.kv_cache_dtype,
        activations=args.activations,
    )
