"""Datasets: CSV through fsspec, npz arrays, text blocks, k-fold splits."""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pytest
import torch

from maas.train.config import ConfigError, parse_config
from maas.train.data import _blocks, kfold, load_data


def _put(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def test_kfold_covers_every_row_once() -> None:
    folds = kfold(23, 5, seed=1)
    held = np.concatenate([va for _, va in folds])
    assert sorted(held.tolist()) == list(range(23))
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == 23


def test_csv_from_an_fsspec_url_with_named_target() -> None:
    rows = ["a,label,b"] + [f"{i},{'yes' if i % 3 else 'no'},{i * 2}" for i in range(50)]
    _put("memory://t/d.csv", "\n".join(rows).encode())
    cfg = parse_config(
        "name: m\ntrain: {steps: 1}\ndata: {kind: csv, train: 'memory://t/d.csv', target: label, test_fraction: 0.2}"
    )
    d = load_data(cfg)
    assert d.labels == ["no", "yes"] and d.input_shape == (2,)
    assert len(d.train) + len(d.val) + len(d.test) == 50 and len(d.test) == 10
    assert abs(float(d.train.x.mean())) < 0.5  # standardized
    assert d.digest.startswith("sha256:")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a,b\n1,2\n3\n", "line 3: 1 fields"),
        (b"a,b\nx,1\n", "features must be numbers"),
        (b"a,b\n", "header row and at least one data row"),
    ],
)
def test_bad_csv(body: bytes, message: str) -> None:
    _put("memory://t/bad.csv", body)
    cfg = parse_config("name: m\ntrain: {steps: 1}\ndata: {kind: csv, train: 'memory://t/bad.csv'}")
    with pytest.raises(ConfigError, match=message):
        load_data(cfg)


def test_missing_data_file_is_a_clear_error() -> None:
    cfg = parse_config("name: m\ntrain: {steps: 1}\ndata: {kind: csv, train: /nonexistent/x.csv}")
    with pytest.raises(ConfigError, match="does not exist"):
        load_data(cfg)


def test_npz_arrays() -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.random.rand(40, 3, 4, 4).astype("f4"), y=np.arange(40) % 4)
    _put("memory://t/a.npz", buf.getvalue())
    d = load_data(parse_config("name: m\ntrain: {steps: 1}\ndata: {kind: arrays, train: 'memory://t/a.npz'}"))
    assert d.input_shape == (3, 4, 4) and d.num_classes == 4


def test_text_blocks_shift_targets_by_one() -> None:
    s = _blocks(list(range(21)), 5)
    assert s.x.shape == (4, 5)
    assert torch.equal(s.y, s.x + 1)


def test_text_with_trained_bpe() -> None:
    text = "\n".join(f"the cat number {i} sat on the mat ." for i in range(300)).encode()
    _put("memory://t/c.txt", text)
    cfg = parse_config(
        "name: m\ntrain: {steps: 1}\n"
        "data: {kind: text, train: 'memory://t/c.txt', vocab_size: 300, block_size: 16}"
    )
    d = load_data(cfg)
    assert d.task == "lm" and d.info["vocab_size"] <= 300
    assert d.tokenizer.decode(d.train.x[0].tolist()).strip().startswith("the cat")
    assert d.unigram_ppl is not None and d.unigram_ppl > 1
