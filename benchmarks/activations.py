"""The integer kernel against float32 activations, side by side in one process (the engine, no HTTP):

    python benchmarks/activations.py                        # SmolLM2-135M Q4_1
    python benchmarks/activations.py --model gemma-3-270m   # Gemma 3 270M Q4_K_M

Loads the same GGUF twice, `--activations float32` and the default (16-bit integer blocks where the CPU
has AVX-512 VNNI), and alternates between them for a few rounds: decode tokens/s of 1 and 32 streams (128-token
prompts, 64 tokens, prefill excluded) and the time to prefill one 512-token prompt. Prints each round and the
ratio of the medians. Alternating in one process keeps the machine's drift out of the comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from maas.engine.llm.engine import Engine, EngineConfig  # noqa: E402
from maas.engine.llm.sampling_params import SamplingParams  # noqa: E402
from maas.kernels import blocks  # noqa: E402
from maas.store.builtin import builtin_path  # noqa: E402

PROMPT = 128


def prompt(n: int, seed: int) -> list[int]:
    """n token ids, different per seed (no prefix shared with other prompts)."""
    return [(seed * 7919 + i * 104729) % 20000 + 100 for i in range(n)]


def decode_rate(engine: Engine, streams: int, gen: int, seed: int) -> float:
    """Decode tokens/s of `streams` sequences after all their prompts are in."""
    params = SamplingParams(temperature=0, max_tokens=gen, ignore_eos=True)
    for i in range(streams):
        engine.add_request(f"d{seed}-{i}", prompt(PROMPT, seed * 100 + i), params)
    while engine.num_waiting or any(
        s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running
    ):
        engine.step()
    steps, t0 = 0, time.perf_counter()
    while engine.has_unfinished():
        engine.step()
        steps += 1
    return streams * steps / (time.perf_counter() - t0)


def prefill_ms(engine: Engine, n: int, seed: int) -> float:
    """Milliseconds from adding an n-token prompt to its first token."""
    engine.add_request(f"p{seed}", prompt(n, 10_000 + seed), SamplingParams(temperature=0, max_tokens=1))
    t0 = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or GGUF path")
    p.add_argument("--rounds", type=int, default=3, help="alternations (default %(default)s)")
    p.add_argument("--gen", type=int, default=64, help="tokens generated per stream (default %(default)s)")
    args = p.parse_args()
    if blocks.integer_kernel() is None:
        raise SystemExit("this CPU has no integer kernel (AVX-512 VNNI): both settings would run float32")
    path = Path(args.model) if Path(args.model).exists() else builtin_path(args.model)
    engines = {
        a: Engine.from_path(
            path, EngineConfig(max_num_seqs=32, max_model_len=700, activations=a, prefix_caching=False)
        )
        for a in ("float32", "int16")
    }
    for e in engines.values():  # warm up
        decode_rate(e, 1, 4, 0)
    results: dict[str, dict[str, list[float]]] = {a: {"c1": [], "c32": [], "ttft": []} for a in engines}
    for r in range(1, args.rounds + 1):
        for a, e in engines.items():
            row = results[a]
            row["c1"].append(decode_rate(e, 1, args.gen, r))
            row["c32"].append(decode_rate(e, 32, args.gen, r))
            row["ttft"].append(prefill_ms(e, 512, r))
            print(
                f"round {r} {a:8}: 1 stream {row['c1'][-1]:6.1f} tok/s, 32 streams {row['c32'][-1]:6.1f} tok/s, "
                f"512-token prefill {row['ttft'][-1]:5.0f} ms",
                flush=True,
            )
    med = {a: {k: statistics.median(v) for k, v in rows.items()} for a, rows in results.items()}
    f, i = med["float32"], med["int16"]
    print(f"\n{path.name}: medians of {args.rounds} rounds, int16 against float32 activations")
    print(f"  1 stream   {i['c1']:7.1f} against {f['c1']:7.1f} tok/s ({i['c1'] / f['c1']:.2f}x)")
    print(f"  32 streams {i['c32']:7.1f} against {f['c32']:7.1f} tok/s ({i['c32'] / f['c32']:.2f}x)")
    print(f"  prefill    {i['ttft']:7.0f} against {f['ttft']:7.0f} ms ({f['ttft'] / i['ttft']:.2f}x as fast)")


if __name__ == "__main__":
    main()
