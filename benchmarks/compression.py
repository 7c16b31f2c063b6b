"""Compression benchmark: every method on the real models, through the command line a user runs, and
one `maas compare` table per model (size, parameters, quality, speed, peak RSS) in one run.

    python benchmarks/compression.py                      # SmolLM2, the digits CNN, MiniLM (~25 min on 2 cores)
    python benchmarks/compression.py --only smollm2 --eval-tokens 2048
    python benchmarks/compression.py --lm-distill         # also the WikiText LM distillation (~8 min more)

SmolLM2-135M: the built-in Q4_1 GGUF dequantized to float32 is the reference (`maas quantize --method
float32`); from it: int8-g32, int4 in groups of 32 and 64 (round to nearest, GPTQ and AWQ; the embedding /
LM head at 8 bits; the reference's weights sit on Q4_1's grid of 32, which int4-g32 reproduces, g64 does
not), 50% magnitude, 50% Wanda, 2:4 Wanda, structured FFN 25%; perplexity on the first --eval-tokens of
WikiText-2 test (`maas eval`), calibration on WikiText-2 validation; the seconds each version took to make.
Digits CNN: the teacher (configs/cnn-digits.yaml); int8 (per channel) and int4-g32 copies; its ONNX export
and ONNX Runtime's int8 of it; half its convolution channels removed.
Students over --seeds seeds (the initial weights and batch order follow the seed, the split is the
teacher's): a half-width CNN from scratch and distilled (same steps); the pruned shape for 10 epochs from
scratch, from the pruned copy, and from the pruned copy distilled.
MiniLM: int8-g32, int4-g32 and int4-g32 GPTQ (the embedding at 8 bits); cosine to the float model over
WikiText-2 test lines.
Each run uses a fresh MAAS_HOME (--home to keep it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "wikitext-2"
LLM, ENCODER = "smollm2-135m-instruct", "all-minilm-l6-v2"


SECONDS: dict[str, float] = {}  # wall time of each version's making, by its ref


def maas(env: dict[str, str], *args: str) -> str:
    """Run one `maas` command; its stdout (the command's own error ends the benchmark)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args], capture_output=True, text=True, env=env
    )
    if r.returncode != 0:
        sys.exit(f"maas {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    print(f"  maas {' '.join(args)}  ({seconds:.0f} s)", file=sys.stderr)
    if "--json" in args and args[0] in ("quantize", "prune"):
        made = json.loads(r.stdout)
        SECONDS[f"{made['name']}:{made['tag']}"] = seconds
    return r.stdout


def smollm2(env: dict[str, str], a: argparse.Namespace) -> list[str]:
    """Make and evaluate every SmolLM2 version; their refs."""
    ref = f"{LLM}:float32"
    calib = ["--calibration", str(DATA / "valid.txt")]
    maas(env, "quantize", LLM, "--method", "float32")
    gptq = ["--calibration-tokens", str(a.gptq_tokens)]
    int4 = [("quantize", ref, "--method", m, "--group-size", g, *extra)
            for g in a.int4_groups.split(",")
            for m, extra in (("int4", []), ("gptq", [*calib, *gptq]), ("awq", calib))]  # fmt: skip
    steps = [
        ("quantize", ref, "--method", "int8"),
        *int4,
        ("prune", ref, "--method", "magnitude", "--sparsity", "0.5"),
        ("prune", ref, "--method", "wanda", "--sparsity", "0.5", *calib),
        ("prune", ref, "--method", "2:4", *calib),
        ("prune", ref, "--structured", "--ffn", "0.25", *calib),
    ]
    refs = [ref]
    for verb, *args in steps:
        refs.append(f"{LLM}:{json.loads(maas(env, verb, *args, '--json'))['tag']}")
    for r in refs:
        maas(env, "eval", r, "--data", str(DATA / "test.txt"), "--limit", str(a.eval_tokens))
    return refs


def digits(env: dict[str, str], a: argparse.Namespace, out: Path) -> tuple[list[str], dict[str, list[float]]]:
    """The teacher and its compressed versions; students over several seeds: half-width from scratch and
    distilled, and the teacher with half its channels removed, trained on from there (with and without the
    teacher) against the same shape from scratch. Refs for the table, accuracies per kind of student."""
    teacher = str(ROOT / "configs/cnn-digits.yaml")
    student = str(ROOT / "configs/distill/cnn-digits-small.yaml")
    maas(env, "train", teacher, "--set", f"output.dir={out / 'teacher'}")
    made = ["cnn-digits"]
    for args in (["--method", "int8", "--group-size", "channel"], ["--method", "int4"]):
        made.append(f"cnn-digits:{json.loads(maas(env, 'quantize', 'cnn-digits', *args, '--json'))['tag']}")
    maas(env, "export", "onnx", "cnn-digits")
    maas(env, "quantize", "cnn-digits:onnx", "--method", "int8")  # ONNX Runtime's static int8
    made += ["cnn-digits:onnx", "cnn-digits:onnx-int8"]
    maas(env, "prune", "cnn-digits", "--structured", "--channels", "0.5")
    made.append("cnn-digits:channels50")
    for r in made:
        maas(env, "eval", r)
    # the pruned shape ([8, 16] channels, 64 hidden) for 10 epochs: from scratch, from the pruned copy, and
    # from the pruned copy with the teacher; every student on the teacher's split
    pruned = ["--set", "model.params.channels=[8, 16]", "--set", "train.epochs=10", "--set", "data.split_seed=0",
              "--set", "name=cnn-digits-pruned"]  # fmt: skip
    acc: dict[str, list[float]] = {k: [] for k in ("scratch", "distilled", "pruned:scratch", "pruned:tuned",
                                                   "pruned:distilled")}  # fmt: skip
    for seed in range(a.seeds):
        s = ["--set", f"seed={seed}"]
        maas(
            env,
            "train",
            student,
            *s,
            "--set",
            f"output.tag=scratch-{seed}",
            "--set",
            f"output.dir={out / 's'}",
        )
        maas(env, "distill", "--teacher", "cnn-digits", "--student", student, "--name",
             f"cnn-digits-small:distilled-{seed}", *s, "--set", f"output.dir={out / 'd'}")  # fmt: skip
        maas(env, "train", teacher, *pruned, *s, "--set", f"output.tag=scratch-{seed}",
             "--set", f"output.dir={out / 'ps'}")  # fmt: skip
        base = ["--set", "model.base=cnn-digits:channels50"]
        maas(env, "train", teacher, *pruned, *base, *s, "--set", f"output.tag=tuned-{seed}",
             "--set", f"output.dir={out / 'pt'}")  # fmt: skip
        maas(env, "distill", "--teacher", "cnn-digits", "--student", teacher, *pruned, *base, *s,
             "--name", f"cnn-digits-pruned:distilled-{seed}", "--set", f"output.dir={out / 'pd'}")  # fmt: skip
        for kind in acc:
            name, _, k = kind.rpartition(":")
            ref = f"cnn-digits-{name or 'small'}:{k}-{seed}"
            acc[kind].append(json.loads(maas(env, "eval", ref, "--json"))["accuracy"])
    students = ["cnn-digits-small:scratch-0", "cnn-digits-small:distilled-0", "cnn-digits-pruned:scratch-0",
                "cnn-digits-pruned:tuned-0", "cnn-digits-pruned:distilled-0"]  # fmt: skip
    return [*made, *students], acc


def lm_distill(env: dict[str, str], out: Path) -> dict[str, float]:
    """Teacher LM, half-layer student distilled and from scratch: test perplexities."""
    student = str(ROOT / "configs/distill/lm-wikitext-half.yaml")
    maas(env, "train", str(ROOT / "configs/lm-wikitext.yaml"), "--set", f"output.dir={out / 'lm'}")
    maas(
        env, "distill", "--teacher", "wikitext-lm", "--student", student, "--set", f"output.dir={out / 'lmd'}"
    )
    maas(env, "train", student, "--set", "data.tokenizer=wikitext-lm", "--set", "output.tag=scratch",
         "--set", f"output.dir={out / 'lms'}")  # fmt: skip
    from maas.store.registry import Registry

    reg = Registry()
    return {
        r: reg.show(r).metrics["test_perplexity"]
        for r in ("wikitext-lm", "wikitext-lm-half", "wikitext-lm-half:scratch")
    }


def minilm(env: dict[str, str], a: argparse.Namespace) -> list[str]:
    """Quantized MiniLM versions, evaluated as cosine to the float model."""
    calib = ["--calibration", str(DATA / "valid.txt"), "--calibration-tokens", str(a.gptq_tokens)]
    refs = [ENCODER]
    for args in (["--method", "int8"], ["--method", "int4"], ["--method", "gptq", *calib]):
        refs.append(f"{ENCODER}:{json.loads(maas(env, 'quantize', ENCODER, *args, '--json'))['tag']}")
    for r in refs:  # the float model against itself: cosine 1, the table's reference row
        maas(env, "eval", r, "--data", str(DATA / "test.txt"), "--limit", "1000", "--reference", ENCODER)
    return refs


def main() -> int:
    """Run the chosen parts and print their tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--only", choices=["smollm2", "digits", "minilm"], action="append", help="run only these parts"
    )
    p.add_argument(
        "--eval-tokens", type=int, default=4096, help="WikiText-2 test tokens scored (default %(default)s)"
    )
    p.add_argument(
        "--gptq-tokens", type=int, default=65536, help="calibration tokens for GPTQ (default %(default)s)"
    )
    p.add_argument("--int4-groups", default="32,64", help="SmolLM2 int4 group sizes (default %(default)s)")
    p.add_argument("--seeds", type=int, default=5, help="digits students per kind (default %(default)s)")
    p.add_argument("--lm-distill", action="store_true", help="also distill the WikiText LM (~8 min)")
    p.add_argument("--home", help="MAAS_HOME to use (default: a fresh temporary one)")
    a = p.parse_args()
    home = a.home or tempfile.mkdtemp(prefix="maas-bench-compress-")
    os.environ["MAAS_HOME"] = home
    env = {**os.environ, "MAAS_HOME": home, "MAAS_AUTO_IMPORT_BUILTINS": "1", "MAAS_LOG_LEVEL": "WARNING"}
    out = Path(home) / "runs"
    parts = a.only or ["smollm2", "digits", "minilm"]
    print(f"# maas compression benchmark (MAAS_HOME={home})\n")
    if "smollm2" in parts:
        refs = smollm2(env, a)
        print(f"## SmolLM2-135M (perplexity: WikiText-2 test, first {a.eval_tokens} tokens)\n")
        print(maas(env, "compare", *refs, "--chart", str(Path(home) / "smollm2.png")))
        print("seconds to make each version (quantize / prune, calibration included):")
        for r in refs[1:]:
            print(f"  {r:40s} {SECONDS.get(r, 0):6.0f}")
        print()
    if "digits" in parts:
        refs, acc = digits(env, a, out)
        print("## Digits CNN (accuracy: the 359-image test split)\n")
        print(maas(env, "compare", *refs, "--chart", str(Path(home) / "digits.png")))
        for kind, xs in acc.items():
            print(f"student {kind:17s} accuracy over {a.seeds} seeds: mean {statistics.fmean(xs):.4f}  "
                  f"({', '.join(f'{x:.4f}' for x in xs)})")  # fmt: skip
        print()
    if a.lm_distill:
        print("## WikiText LM distillation (test perplexity)\n")
        for r, ppl in lm_distill(env, out).items():
            print(f"{r:28s} {ppl:.2f}")
        print()
    if "minilm" in parts:
        refs = minilm(env, a)
        print("## all-MiniLM-L6-v2 (cosine to the float model over 1000 WikiText-2 test lines)\n")
        print(maas(env, "compare", *refs, "--streams", "1,16", "--tokens", "20"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
