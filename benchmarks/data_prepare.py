"""Data preparation benchmark: tokens/s of `maas data prepare` (local engine; Spark local[1] and local[2]) next
to Hugging Face `datasets` doing the same tokenize-and-pack with `map(num_proc=2)`, in one run.

    python benchmarks/data_prepare.py                  # WikiText-2 (valid + test) x 8, about 20 MB
    python benchmarks/data_prepare.py --copies 2 --skip-spark

The corpus is WikiText-2's valid and test files repeated --copies times (each copy with a line of its own so
that no copy is a duplicate of another). Every side reads lines as documents, drops blank ones, tokenizes
them with SmolLM2's tokenizer (no special tokens, EOS after each), and packs blocks of --block-size tokens;
maas with `--dedup none --split-by line`, so both do the same work. Timed: for maas the whole command (a
fresh process: imports, the tokenizer read from the GGUF file, Spark's start) and its work alone (the
manifest's engine seconds: read, clean, tokenize, pack, write); for `datasets` load + both maps + writing
Arrow files (in this process, imports and tokenizer already loaded, cache off). tokens/s are over the work
alone. Needs `pip install datasets` (and PySpark for the Spark rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2"


def corpus(d: Path, copies: int) -> Path:
    text = (WIKI / "valid.txt").read_text() + (WIKI / "test.txt").read_text()
    path = d / "corpus.txt"
    with path.open("w") as f:
        for i in range(copies):
            f.write(f"copy {i} of the corpus\n{text}")
    return path


def run_maas(path: Path, out: Path, block: int, *extra: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "--log-level", "warning", "data", "prepare", str(path),
         "--tokenizer", "smollm2-135m-instruct", "--block-size", str(block), "--dedup", "none",
         "--split-by", "line", "--out", str(out), "--json", *extra],
        capture_output=True, text=True, env={**os.environ, "MAAS_AUTO_IMPORT_BUILTINS": "0"},
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"maas data prepare failed:\n{r.stderr[-3000:]}")
    m = json.loads(r.stdout)
    return seconds, float(m["engine"]["seconds"]), int(m["stats"]["tokens"])


def run_datasets(path: Path, out: Path, block: int) -> tuple[float, float, int]:
    import datasets
    from transformers import PreTrainedTokenizerFast

    from maas.data.prepare import tokenizer_of

    tok_json, _, eos, _, _, _ = tokenizer_of("smollm2-135m-instruct")
    tj = out / "tokenizer.json"
    out.mkdir(parents=True)
    tj.write_text(tok_json)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tj))
    datasets.disable_caching()
    t0 = time.perf_counter()
    ds = datasets.load_dataset("text", data_files=str(path), split="train")
    ds = ds.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True, num_proc=2)

    def encode(batch: dict) -> dict:
        ids = tok([t.strip() for t in batch["text"]], add_special_tokens=False)["input_ids"]
        return {"ids": [x + [eos] for x in ids]}

    def pack(batch: dict) -> dict:
        flat = [t for ids in batch["ids"] for t in ids]
        n = len(flat) // block * block
        return {"block": [flat[i : i + block] for i in range(0, n, block)]}

    ds = ds.map(encode, batched=True, num_proc=2, remove_columns=["text"])
    tokens = sum(len(x) for x in ds["ids"])
    ds = ds.map(pack, batched=True, batch_size=1000, num_proc=2, remove_columns=["ids"])
    ds.save_to_disk(str(out / "arrow"))
    seconds = time.perf_counter() - t0
    return seconds, seconds, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--copies", type=int, default=8, help="copies of WikiText-2 valid + test (default %(default)s)"
    )
    p.add_argument("--block-size", type=int, default=512, help="tokens a block (default %(default)s)")
    p.add_argument("--skip-spark", action="store_true", help="leave the Spark rows out")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="maas-bench-data-") as tmp:
        d = Path(tmp)
        path = corpus(d, a.copies)
        rows: list[tuple[str, float, float, int]] = []
        print(f"corpus: {path.stat().st_size / 1e6:.1f} MB ({a.copies} copies of WikiText-2 valid + test); "
              f"{os.cpu_count()} CPU cores", file=sys.stderr)  # fmt: skip
        rows.append(("maas, local engine", *run_maas(path, d / "local", a.block_size)))
        if not a.skip_spark:
            for n in (1, 2):
                spark = ("--engine", "spark", "--master", f"local[{n}]", "--partitions", str(2 * n))
                rows.append(
                    (f"maas, Spark local[{n}]", *run_maas(path, d / f"spark{n}", a.block_size, *spark))
                )
        try:
            rows.append(("datasets map(num_proc=2)", *run_datasets(path, d / "hf", a.block_size)))
        except ImportError:
            print("datasets is not installed (pip install datasets): its row is left out", file=sys.stderr)
        base = next((r for r in rows if r[0].startswith("datasets")), None)
        print("\n| configuration | whole command s | work s | tokens | tokens/s (work) | vs datasets |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, whole, work, t in rows:
            ratio = f"{(t / work) / (base[3] / base[2]):.2f}x" if base else "-"
            print(f"| {name} | {whole:.1f} | {work:.1f} | {t:,} | {t / work:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
