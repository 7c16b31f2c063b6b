"""Datasets: CSV through fsspec, npz arrays, text blocks, k-fold splits."""

from __future__ import annotations

import io
import json

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


def test_jsonl_corpus_and_its_errors() -> None:
    lines = [json.dumps({"body": f"record {i} says hello to the world ."}) for i in range(200)]
    _put("memory://t/c.jsonl", "\n".join(lines).encode())
    src = "name: m\ntrain: {steps: 1}\ndata: {kind: text, train: 'memory://t/c.jsonl', vocab_size: 300, block_size: 8%s}"
    d = load_data(parse_config(src % ", text_field: body"))
    assert d.info["documents"] == 200
    assert "record" in d.tokenizer.decode(d.train.x[0].tolist())
    with pytest.raises(ConfigError, match="line 1: no string field 'text'"):
        load_data(parse_config(src % ""))
    _put("memory://t/bad.jsonl", b'{"text": "fine"}\n{not json\n')
    with pytest.raises(ConfigError, match="line 2: not JSON"):
        load_data(parse_config(src.replace("c.jsonl", "bad.jsonl") % ""))


def test_rnn_language_model_trains_and_round_trips(tmp_path) -> None:
    """The recurrent LM on a small corpus: loss falls; the exported directory rebuilds the model."""
    from maas.models.exported import load_exported
    from maas.train.distributed import DistContext
    from maas.train.export import export_model
    from maas.train.run import build_model, seed_everything
    from maas.train.trainer import Trainer

    _put("memory://t/r.txt", "\n".join(f"the cat {i % 7} sat on the mat ." for i in range(400)).encode())
    cfg = parse_config(
        "name: r\nmodel: {arch: rnn-lm, params: {cell: gru, hidden_size: 32, embed_size: 16, num_layers: 1}}\n"
        "data: {kind: text, train: 'memory://t/r.txt', vocab_size: 300, block_size: 16}\n"
        f"optim: {{lr: 0.01}}\ntrain: {{steps: 60, batch_size: 8, eval_every: 60}}\noutput: {{dir: '{tmp_path}'}}"
    )
    seed_everything(0)
    data = load_data(cfg)
    t = Trainer(cfg, data, build_model(cfg, data), DistContext(), tmp_path)
    res = t.fit()
    assert res.metrics["val_perplexity"] < data.unigram_ppl / 2
    m = load_exported(export_model(t.model, cfg, data, tmp_path / "model"))
    x = data.val.x[:2]
    with torch.no_grad():
        assert torch.allclose(m(x), t.model.eval()(x), atol=1e-6)
