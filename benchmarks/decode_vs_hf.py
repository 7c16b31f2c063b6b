"""Decode speed of maas's engine next to Hugging Face `generate` on the same model, in one run.

    python benchmarks/decode_vs_hf.py                                  # GPU when present (bf16), else CPU
    python benchmarks/decode_vs_hf.py --model gemma-3-270m --streams 1,32 --gen 128
    python benchmarks/decode_vs_hf.py --device cpu --gen 16           # a quick check of the harness

For each number of streams C, both sides get the same C prompts of `--prompt-len` synthetic token ids and
generate `--gen` tokens each, greedy, ignoring end-of-sequence. Decode tokens/s counts only the tokens after
the first, over the time after the prompts are in (llama.cpp's S_TG split):
- maas: the engine in this process; every prompt prefilled, then decode steps timed.
- transformers: `generate` of all C rows at once (one batch, no padding: the prompts are the same length),
  timed with `max_new_tokens=gen` and with 1; decode time is the difference.

A GGUF is loaded by transformers dequantized (`gguf_file`), so both sides compute with the file's values
(bf16 on a GPU: maas dequantizes block formats there too). Peak GPU memory is reported for each side.

`--random-weights` needs no model file: an HF directory of the model's shape (SHAPES: SmolLM2-135M,
Gemma 3 270M) with random weights and a placeholder tokenizer is written to a temporary folder and both
sides load it. Speed does not depend on the values, and the folder is built where the benchmark runs (a
machine that cannot fetch or be sent the model files can still be measured).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving import engine_decode_rate, synthetic_prompt  # noqa: E402  (this script's folder is on the path)

# the two default models' configurations, as transformers reads them from their GGUF files
SHAPES: dict[str, dict] = {
    "smollm2-135m-instruct": dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
        rms_norm_eps=1e-5, tie_word_embeddings=True, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
    ),
    "gemma-3-270m": dict(
        model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True, query_pre_attn_scalar=256,
        sliding_window=512, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
    ),
}  # fmt: skip


def random_model_dir(shape: dict, out: Path) -> Path:
    """An HF directory of `shape` with random weights (transformers' initialisation) and a tokenizer of one
    placeholder word per id."""
    import tokenizers
    import transformers

    cfg = transformers.AutoConfig.for_model(**shape)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    vocab = {f"t{i}": i for i in range(shape["vocab_size"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_maas(
    args: argparse.Namespace, path: Path, levels: list[int]
) -> tuple[dict[int, float], str, float | None]:
    from maas.engine.llm.engine import Engine, EngineConfig
    from maas.engine.llm.sampling_params import SamplingParams

    cfg = EngineConfig(
        device=args.device, max_num_seqs=max(levels), max_model_len=args.prompt_len + args.gen + 16
    )
    engine = Engine.from_path(path, cfg)
    device = engine.runner.device
    reset_peak(device)
    params = SamplingParams(temperature=0, max_tokens=args.gen, ignore_eos=True)
    out: dict[int, float] = {}
    for c in [levels[0], *levels]:  # the first level twice: the first pass warms up (CUDA kernels, allocator)
        out[c] = engine_decode_rate(engine, c, args.prompt_len, params)  # each step ends on the host
    desc = (
        "cpu, the default weights"
        if device.type == "cpu"
        else f"{device}, {cfg.dtype} dtype (bf16 where supported)"
    )
    peak = peak_mib(device)
    del engine
    gc.collect()
    return out, desc, peak


def load_hf(path: Path, device: torch.device):
    import transformers

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if path.is_file():  # a GGUF: transformers dequantizes it
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=dtype
        )
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(device).eval()


def bench_hf(
    args: argparse.Namespace, path: Path, device: torch.device, levels: list[int]
) -> tuple[dict[int, float], float | None]:
    model = load_hf(path, device)
    reset_peak(device)

    def run(c: int, new: int) -> float:
        ids = torch.tensor([synthetic_prompt(args.prompt_len, i) for i in range(c)], device=device)
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip
        sync(device)
        return time.perf_counter() - t0

    out: dict[int, float] = {}
    for c in [levels[0], *levels]:  # warm-up pass first, as for maas
        prefill = min(run(c, 1) for _ in range(2))
        out[c] = c * (args.gen - 1) / max(run(c, args.gen) - prefill, 1e-9)
    return out, peak_mib(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="a built-in name or a local path (GGUF or HF directory)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--streams", default="1,32", help="comma-separated stream counts (default %(default)s)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen", type=int, default=128, help="tokens generated per stream (default %(default)s)")
    p.add_argument("--no-hf", action="store_true", help="maas only")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help=f"random weights of the model's shape ({', '.join(SHAPES)})",
    )
    args = p.parse_args()
    if args.gen < 2:
        p.error("--gen must be at least 2 (decode is timed after the first token)")
    from maas.engine.device import pick_device
    from maas.errors import MaasError
    from maas.store.locate import resolve

    tmp = tempfile.TemporaryDirectory(prefix="maas-random-")
    try:
        device = pick_device(args.device)
        if args.random_weights:
            if args.model not in SHAPES:
                raise MaasError(
                    f"--random-weights knows the shapes of {', '.join(SHAPES)}, not {args.model!r}"
                )
            name = f"{args.model}'s shape, random weights"
            path = random_model_dir(SHAPES[args.model], Path(tmp.name))
        else:
            name, path = resolve(args.model)
            name += f" ({path.name})"
    except MaasError as e:
        sys.exit(f"error: {e}")
    levels = [int(c) for c in args.streams.split(",")]
    print(f"# {name}, {args.prompt_len}-token prompts, {args.gen} tokens each, device {device}")
    ours, desc, our_peak = bench_maas(args, path, levels)
    gc.collect()  # maas's engine, before transformers loads
    theirs, their_peak = ({}, None) if args.no_hf else bench_hf(args, path, device, levels)
    print(f"maas: {desc}; transformers {__import__('transformers').__version__}")
    print(f"{'streams':>7} {'maas tok/s':>11} {'HF tok/s':>9} {'ratio':>6}")
    for c in levels:
        hf = theirs.get(c)
        ratio = f"{ours[c] / hf:.2f}x" if hf else "-"
        print(f"{c:>7} {ours[c]:>11.1f} {f'{hf:.1f}' if hf else '-':>9} {ratio:>6}")
    if our_peak is not None:
        print(
            f"peak GPU memory allocated: maas {our_peak:.0f} MiB, transformers {their_peak or float('nan'):.0f} MiB"
        )


if __name__ == "__main__":
    main()
