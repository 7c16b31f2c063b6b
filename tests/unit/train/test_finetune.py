"""Fine-tuning: a model trained here becomes the base of a full fine-tune (no LoRA)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import torch

from maas.models.exported import load_exported
from maas.train.config import parse_config
from maas.train.data import load_data
from maas.train.distributed import DistContext
from maas.train.export import export_model
from maas.train.run import build_model, seed_everything
from maas.train.trainer import Trainer


def _fit(src: str, out: Path) -> Trainer:
    cfg = parse_config(src + f"\noutput: {{dir: '{out}'}}")
    seed_everything(0)
    data = load_data(cfg)
    t = Trainer(cfg, data, build_model(cfg, data), DistContext(), out)
    t.fit()
    export_model(t.model, cfg, data, out / "model")
    return t


def test_full_fine_tune_of_an_exported_lm(tmp_path: Path) -> None:
    with fsspec.open("memory://ft/a.txt", "wb") as f:
        f.write("\n".join(f"alpha beta gamma {i % 5} delta ." for i in range(300)).encode())
    with fsspec.open("memory://ft/b.txt", "wb") as f:
        f.write("\n".join(f"omega sigma {i % 3} tau ." for i in range(300)).encode())
    _fit(
        "name: base\nmodel: {arch: llama, params: {hidden_size: 32, num_attention_heads: 2, num_hidden_layers: 1}}\n"
        "data: {kind: text, train: 'memory://ft/a.txt', vocab_size: 300, block_size: 16}\n"
        "optim: {lr: 0.01}\ntrain: {steps: 30, batch_size: 8, eval_every: 30}",
        tmp_path / "base",
    )
    base_dir = tmp_path / "base" / "model"
    src = (
        f"name: tuned\nmodel: {{base: '{base_dir}'}}\n"
        f"data: {{kind: text, train: 'memory://ft/b.txt', tokenizer: '{base_dir}', block_size: 16}}\n"
        "optim: {lr: 0.01}\ntrain: {steps: 30, batch_size: 8, eval_every: 30}"
    )
    cfg = parse_config(src + f"\noutput: {{dir: '{tmp_path / 'tuned'}'}}")
    data = load_data(cfg)
    before = Trainer(cfg, data, build_model(cfg, data), DistContext(), tmp_path / "x").evaluate(
        data.val, "val"
    )
    tuned = _fit(src, tmp_path / "tuned")
    after = tuned.history[-1]["val_loss"]
    assert after < before["val_loss"] - 0.5  # it learned the new corpus
    assert all(p.requires_grad for p in tuned.model.parameters())  # full fine-tune: every weight trains
    m = load_exported(tmp_path / "tuned" / "model")
    x = data.val.x[:2]
    with torch.no_grad():
        assert torch.allclose(m(x), tuned.model.eval()(x), atol=1e-5)
    assert not torch.equal(m.model.embed_tokens.weight, load_exported(base_dir).model.embed_tokens.weight)
