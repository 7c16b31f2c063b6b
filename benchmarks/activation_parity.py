"""Which cheaper numerics keep greedy answers identical to transformers on the same GGUF (the parity prompts
of tests/integration: 20 for SmolLM2, 20 for Gemma 3), simulated through the PyTorch modules:

    python benchmarks/activation_parity.py                      # SmolLM2-135M Q4_1
    python benchmarks/activation_parity.py --model gemma-3-270m

Variants: `float32 KV` and `float16 KV` (the default) with float32 activations; activations rounded to 8-bit
blocks of 32 (llama.cpp's Q8_0 / Q8_1 for 32-weight formats, its Q8_K blocks of 256 for the K-quants) as
integer dot products would see them; activations rounded to 16-bit blocks of 32; and the integer kernel
itself (`--activations auto` where the CPU has it), through the modules. Prints, for each, the
prompts whose 32 greedy tokens equal transformers' and where the others first differ. Needs the dev install
(transformers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maas.engine.llm.engine import Engine, EngineConfig  # noqa: E402
from maas.kernels.blocks import BlockLinear  # noqa: E402
from maas.store.builtin import builtin_path  # noqa: E402
from tests.conftest import engine_greedy, hf_greedy  # noqa: E402


def rounded(x: torch.Tensor, block: int, levels: int, f16_scale: bool) -> torch.Tensor:
    """x with each run of `block` values along the last axis rounded to integers in [-levels, levels] times
    a per-block scale (amax / levels), as an integer-activation kernel computes with them."""
    xb = x.float().reshape(-1, block)
    d = xb.abs().amax(-1, keepdim=True) / levels
    q = torch.round(xb * torch.where(d > 0, 1 / d, torch.zeros_like(d))).clamp(-levels, levels)
    if f16_scale:  # llama.cpp keeps the 32-block activation scales in fp16
        d = d.half().float()
    return (q * d).reshape(x.shape).to(x.dtype)


def with_activations(levels: int | None):
    """BlockLinear.forward seeing activations rounded to `levels` (None: unchanged)."""
    plain = BlockLinear.forward

    def forward(self: BlockLinear, x: torch.Tensor) -> torch.Tensor:
        k_quant = self.fmt.endswith("_K") and levels == 127
        return plain(self, rounded(x, 256 if k_quant else 32, levels, levels == 127 and not k_quant))

    return plain if levels is None else forward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct or gemma-3-270m")
    args = p.parse_args()
    import transformers

    if args.model == "gemma-3-270m":
        from tests.integration.test_gemma3 import PROMPTS as prompts
    else:
        from tests.integration.test_parity_transformers import GREEDY_PROMPTS as prompts
    path = builtin_path(args.model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    variants = [  # label, KV cache, simulated rounding (None: none), --activations
        ("float32 KV, float32 activations", "float32", None, "float32"),
        ("float16 KV, float32 activations", "float16", None, "float32"),
        ("float16 KV, 8-bit activation blocks", "float16", 127, "float32"),
        ("float16 KV, 16-bit activation blocks", "float16", 32767, "float32"),
        ("float16 KV, the integer kernel (default)", "float16", None, "auto"),
    ]
    plain = BlockLinear.forward
    refs: dict[int, list[int]] = {}
    print(f"{args.model}: {len(prompts)} prompts, 32 greedy tokens each, against transformers on {path.name}")
    for label, kv, levels, activations in variants:
        BlockLinear.forward = with_activations(levels)  # type: ignore[method-assign]
        try:
            engine = Engine.from_path(
                path,
                EngineConfig(
                    max_model_len=512, fused_decode=False, kv_cache_dtype=kv, activations=activations
                ),
            )
            t0, same, first = time.perf_counter(), 0, []
            for i, prompt in enumerate(prompts):
                lm = engine.lm
                ids = lm.tokenizer.encode(
                    prompt if isinstance(prompt, str) else lm.chat_template.render(prompt)
                )
                if i not in refs:
                    refs[i] = hf_greedy(hf, ids, 32)
                got = engine_greedy(engine, ids, 32)
                if got == refs[i]:
                    same += 1
                else:
                    first.append(next(j for j in range(32) if got[j] != refs[i][j]))
        finally:
            BlockLinear.forward = plain  # type: ignore[method-assign]
        where = f"; the others first differ at tokens {sorted(first)}" if first else ""
        print(f"  {label:44} {same:2}/{len(prompts)} identical{where} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
