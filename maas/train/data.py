"""Datasets for training: tokenized text (plain or JSONL) packed into blocks, and classic (features, label) sets.

Everything is held in memory as tensors (the datasets here are megabytes); files are read
through fsspec, so `s3://`, `hdfs://` and `memory://` URLs work like local paths.

    ds = load_data(cfg)          # Data with train / val / test splits
    x, y = ds.train.x[idx], ds.train.y[idx]
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from maas.train.config import ConfigError, TrainConfig

log = logging.getLogger("maas.train")

EOS = "<|endoftext|>"


@dataclass
class Split:
    """Inputs and targets of one split. Classification: x (N, ...), y (N,); LM: x, y (N, T)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray | torch.Tensor) -> Split:
        """The rows at `idx`."""
        i = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.x[i], self.y[i])


@dataclass
class Data:
    """The splits, what the model must be built for, and where the data came from (lineage)."""

    task: str  # "classify" | "lm"
    train: Split
    val: Split
    test: Split
    digest: str  # sha256 of the source bytes (or the dataset's name and version)
    input_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    labels: list[str] | None = None
    tokenizer: Any = None  # tokenizers.Tokenizer for LMs
    eos_id: int | None = None
    unigram_ppl: float | None = None  # validation perplexity of the train-set unigram model
    info: dict[str, Any] = field(default_factory=dict)


def read_bytes(url: str) -> bytes:
    """A whole file, local or remote."""
    import fsspec

    try:
        with fsspec.open(url, "rb") as f:
            return bytes(f.read())
    except FileNotFoundError:
        raise ConfigError(f"data file {url!r} does not exist") from None
    except (OSError, ValueError, ImportError) as e:
        raise ConfigError(f"cannot read data file {url!r}: {e}") from None


def load_data(cfg: TrainConfig) -> Data:
    """The dataset the config asks for, split and ready."""
    kind = cfg.data.kind
    if kind == "text":
        return _text(cfg)
    if kind == "digits":
        from sklearn import __version__ as skv
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        y = torch.tensor(d.target, dtype=torch.long)
        return _classic(cfg, x, y, f"sklearn-digits-{skv}", [str(i) for i in range(10)])
    if kind == "csv":
        return _csv(cfg)
    return _arrays(cfg)


# -- classic datasets ----------------------------------------------------------------------------


def _classic(
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    digest: str,
    labels: list[str],
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Data:
    """Shuffle with the split seed (default: the run's); hold out test (unless a test file was given) and
    validation rows."""
    g = np.random.default_rng(cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed)
    perm = g.permutation(len(x))
    n_test = 0 if test is not None else int(round(len(x) * cfg.data.test_fraction))
    rest = perm[n_test:]
    n_val = int(round(len(rest) * cfg.data.val_fraction))
    full = Split(x, y)
    return Data(
        task="classify",
        train=full.subset(rest[n_val:]),
        val=full.subset(rest[:n_val]),
        test=Split(*test) if test is not None else full.subset(perm[:n_test]),
        digest=digest,
        input_shape=tuple(x.shape[1:]),
        num_classes=len(labels),
        labels=labels,
        info={"examples": len(x)},
    )


def kfold(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index pairs covering 0..n-1; each row is validation exactly once."""
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    return [(np.concatenate([f for j, f in enumerate(folds) if j != i]), folds[i]) for i in range(k)]


def _table(raw: bytes, url: str, target: str | None) -> tuple[np.ndarray, list[str]]:
    """(features float32 (N, F), label strings) from CSV bytes with a header row."""
    import csv

    rows = list(csv.reader(io.StringIO(raw.decode("utf-8", errors="replace"))))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise ConfigError(f"{url!r}: a CSV file needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    col = header.index(target) if target in header else len(header) - 1
    if target is not None and target not in header:
        raise ConfigError(f"{url!r}: no column {target!r} (columns: {', '.join(header)})")
    feats, labels = [], []
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise ConfigError(f"{url!r} line {n}: {len(r)} fields, the header has {len(header)}")
        try:
            feats.append([float(v) for i, v in enumerate(r) if i != col])
        except ValueError as e:
            raise ConfigError(f"{url!r} line {n}: {e} (features must be numbers)") from None
        labels.append(r[col].strip())
    return np.asarray(feats, dtype=np.float32), labels


def _csv(cfg: TrainConfig) -> Data:
    url = cfg.path(cfg.data.train or "")
    raw = read_bytes(url)
    x, labels = _table(raw, url, cfg.data.target)
    classes = sorted(set(labels), key=lambda s: (float(s), s) if _is_number(s) else (float("inf"), s))
    index = {c: i for i, c in enumerate(classes)}
    test = None
    digest = hashlib.sha256(raw)
    if cfg.data.test:
        turl = cfg.path(cfg.data.test)
        traw = read_bytes(turl)
        digest.update(traw)
        tx, tl = _table(traw, turl, cfg.data.target)
        unknown = set(tl) - set(index)
        if unknown:
            raise ConfigError(f"{turl!r} has labels not in the training file: {sorted(unknown)[:5]}")
        test = (torch.from_numpy(tx), torch.tensor([index[v] for v in tl]))
    mean, std = x.mean(0), x.std(0) + 1e-8  # standardize with training statistics
    xt = torch.from_numpy((x - mean) / std)
    if test is not None:
        test = ((test[0] - torch.from_numpy(mean)) / torch.from_numpy(std), test[1])
    y = torch.tensor([index[v] for v in labels])
    data = _classic(cfg, xt, y, "sha256:" + digest.hexdigest(), classes, test)
    data.info["standardize"] = {"mean": mean.tolist(), "std": std.tolist()}
    return data


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _arrays(cfg: TrainConfig) -> Data:
    """An .npz file with `x` (N, ...) float images/features and `y` (N,) integer labels."""
    url = cfg.path(cfg.data.train or "")
    raw = read_bytes(url)
    try:
        z = np.load(io.BytesIO(raw), allow_pickle=False)
        x, y = np.asarray(z["x"], dtype=np.float32), np.asarray(z["y"])
    except (ValueError, KeyError, OSError) as e:
        raise ConfigError(f"{url!r}: expected an .npz file with arrays 'x' and 'y': {e}") from None
    if len(x) != len(y) or y.ndim != 1:
        raise ConfigError(f"{url!r}: 'x' has {len(x)} rows and 'y' has shape {y.shape}")
    classes = sorted(set(y.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    yt = torch.tensor([index[v] for v in y.tolist()])
    return _classic(
        cfg, torch.from_numpy(x), yt, "sha256:" + hashlib.sha256(raw).hexdigest(), [str(c) for c in classes]
    )


# -- text ----------------------------------------------------------------------------------------


def train_bpe(lines: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on `lines` (GPT-2 style; EOS is id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def _documents(raw: bytes, url: str, text_field: str, limit: int | None) -> list[str]:
    """Documents of a corpus: non-empty lines of a text file, or the `text_field` of each object
    of a JSONL file (`.jsonl` / `.ndjson`)."""
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if url.split("?")[0].endswith((".jsonl", ".ndjson")):
        docs = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{url!r} line {n}: not JSON ({e.msg})") from None
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise ConfigError(f"{url!r} line {n}: no string field {text_field!r} (data.text_field)")
            if text.strip():
                docs.append(text)
    else:
        docs = [ln.strip() for ln in lines if ln.strip()]
    return docs[:limit] if limit else docs


def _blocks(ids: list[int], block: int) -> Split:
    """Non-overlapping (block + 1)-token windows -> inputs (N, block) and next-token targets."""
    n = (len(ids) - 1) // block
    if n < 1:
        raise ConfigError(f"the text has {len(ids)} tokens: too few for one block of {block}")
    t = torch.tensor(ids[: n * block + 1], dtype=torch.long)
    x = t[:-1].view(n, block)
    y = t[1:].view(n, block)
    return Split(x, y)


def _prepared(cfg: TrainConfig, url: str) -> Data:
    """A dataset made by `maas data prepare`, streamed from its shards (nothing read up front)."""
    from tokenizers import Tokenizer

    from maas.data import manifest
    from maas.data.blocks import windows

    m = manifest.read(url)
    block = int(m["block_size"])
    if cfg.data.block_size != block:
        raise ConfigError(f"{url} holds blocks of {block} tokens: set data.block_size: {block}")
    splits = {s: windows(url, s, m["splits"][s], block, m["dtype"]) for s in ("train", "val", "test")}
    if len(splits["train"][0]) == 0:
        raise ConfigError(f"{url}: the training split has no whole block")
    train = Split(*splits["train"])  # type: ignore[arg-type]
    val = Split(*splits["val"]) if len(splits["val"][0]) else Split(train.x[:0], train.y[:0])  # type: ignore[arg-type]
    test = Split(*splits["test"]) if len(splits["test"][0]) else val  # type: ignore[arg-type]
    tokenizer = Tokenizer.from_str(read_bytes(f"{url.rstrip('/')}/tokenizer.json").decode("utf-8"))
    info: dict[str, Any] = {"tokens": m["tokens"], "vocab_size": m["vocab_size"], "documents": m["documents"],
                            "dataset": url, "streamed": True}  # fmt: skip
    if m.get("tokenizer_config"):
        info["tokenizer_config"] = m["tokenizer_config"]
    return Data(task="lm", train=train, val=val, test=test, digest=m["digest"], tokenizer=tokenizer,
                eos_id=int(m["eos_id"]), unigram_ppl=m["stats"]["unigram_perplexity"], info=info)  # fmt: skip


def _text(cfg: TrainConfig) -> Data:
    from maas.data import manifest

    url = cfg.path(cfg.data.train or "")
    if manifest.exists(url):
        return _prepared(cfg, url)
    raw = read_bytes(url)
    digest = hashlib.sha256(raw)
    docs = _documents(raw, url, cfg.data.text_field, cfg.data.max_documents)
    if cfg.data.tokenizer == "bpe":
        hf = train_bpe(docs, cfg.data.vocab_size)
        eos_id = int(hf.token_to_id(EOS))
        vocab = int(hf.get_vocab_size())
    else:
        from maas.data.tokenizer import model_tokenizer, special_tokens

        _, base, _ = model_tokenizer(cfg.data.tokenizer)
        eos_id = base.eos_token_ids[0] if base.eos_token_ids else 0
        tok_config = special_tokens(base)
        vocab = int(base.vocab_size)
        hf = base.hf

    def stream(texts: list[str]) -> list[int]:
        out: list[int] = []
        for e in hf.encode_batch(texts, add_special_tokens=False):
            out.extend(e.ids)
            out.append(eos_id)  # documents (lines) end with EOS, as serving stops on it
        return out

    ids = stream(docs)
    n_val = int(len(ids) * cfg.data.val_fraction)
    train_ids, val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
    block = cfg.data.block_size
    if cfg.data.test:
        turl = cfg.path(cfg.data.test)
        traw = read_bytes(turl)
        digest.update(traw)
        test_ids = stream(_documents(traw, turl, cfg.data.text_field, cfg.data.max_documents))
    else:
        test_ids = val_ids
    info: dict[str, Any] = {"tokens": len(ids), "vocab_size": vocab, "documents": len(docs)}
    if cfg.data.tokenizer != "bpe":
        info["tokenizer_config"] = tok_config
    train = _blocks(train_ids, block)
    val = _blocks(val_ids, block) if len(val_ids) > block else Split(train.x[:0], train.y[:0])
    counts = np.bincount(np.asarray(train_ids), minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    ref = val_ids if len(val_ids) > 1 else train_ids
    unigram = float(np.exp(-logp[np.asarray(ref)].mean()))
    return Data(
        task="lm",
        train=train,
        val=val,
        test=_blocks(test_ids, block),
        digest="sha256:" + digest.hexdigest(),
        tokenizer=hf,
        eos_id=eos_id,
        unigram_ppl=unigram,
        info=info,
    )


def describe(data: Data) -> str:
    """One line for the log."""
    what = (
        f"{data.info.get('tokens')} tokens, vocabulary {data.info.get('vocab_size')}, "
        f"unigram perplexity {data.unigram_ppl:.1f}"
        if data.task == "lm"
        else f"{data.info.get('examples')} examples of shape {data.input_shape}, {data.num_classes} classes"
    )
    return f"{what}; splits train {len(data.train)} / val {len(data.val)} / test {len(data.test)}"


def tokenizer_json(data: Data) -> str | None:
    """The LM tokenizer serialized for export (tokenizer.json)."""
    tok = data.tokenizer
    return None if tok is None else str(tok.to_str())
