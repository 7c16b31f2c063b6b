"""The model zoo and LoRA adapters."""

from __future__ import annotations

import pytest
import torch

from maas.errors import MaasError
from maas.models.zoo import build
from maas.train.lora import LoRALinear, add_lora, merge_lora


@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
def test_classifiers_on_images(arch: str) -> None:
    m = build(arch, {}, input_shape=(1, 8, 8), num_classes=10)
    assert m(torch.randn(5, 1, 8, 8)).shape == (5, 10)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_cells(cell: str) -> None:
    m = build("rnn", {"cell": cell, "bidirectional": True}, input_shape=(12, 3), num_classes=4)
    assert m(torch.randn(2, 12, 3)).shape == (2, 4)
    lm = build("rnn-lm", {"cell": cell, "hidden_size": 16, "embed_size": 8}, vocab_size=50)
    assert lm(torch.randint(0, 50, (2, 7))).shape == (2, 7, 50)


def test_llama_from_scratch_is_small_and_tied() -> None:
    m = build("llama", {"hidden_size": 32, "num_attention_heads": 2}, vocab_size=100)
    assert m(torch.randint(0, 100, (2, 9))).shape == (2, 9, 100)
    assert m.lm_head.weight is m.model.embed_tokens.weight


def test_bad_parameters_and_architectures() -> None:
    with pytest.raises(MaasError, match="bad parameters for model 'cnn'"):
        build("cnn", {"chanels": [4]}, input_shape=(1, 8, 8), num_classes=2)
    with pytest.raises(MaasError, match="needs image inputs"):
        build("cnn", {}, input_shape=(64,), num_classes=2)
    with pytest.raises(MaasError, match="needs a text dataset"):
        build("llama", {})
    with pytest.raises(MaasError, match="unknown model architecture"):
        build("resnet", {})


def test_lora_trains_adapters_only_and_merges_exactly() -> None:
    torch.manual_seed(0)
    m = build("llama", {"hidden_size": 32, "num_attention_heads": 2}, vocab_size=64)
    n = add_lora(m, rank=4, alpha=8)
    assert n == 4  # q_proj and v_proj of 2 layers
    trainable = {name for name, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    for mod in m.modules():
        if isinstance(mod, LoRALinear):
            torch.nn.init.normal_(mod.lora_b)  # as if trained
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        before = m(ids)
        merge_lora(m)
        after = m(ids)
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    assert torch.allclose(before, after, atol=1e-5)
