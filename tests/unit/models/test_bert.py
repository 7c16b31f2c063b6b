"""The BERT encoder's packed forward: sequences laid end to end, attention in groups of similar length."""

from __future__ import annotations

import pytest
import torch

from maas.models.bert import BertConfig, BertModel, Packing


@pytest.fixture(scope="module")
def model() -> BertModel:
    torch.manual_seed(0)
    m = BertModel(BertConfig.tiny()).eval()
    for p in m.parameters():  # random weights everywhere (LayerNorm too), so that mistakes show
        torch.nn.init.normal_(p, std=0.2)
    return m.fuse_qkv()


def alone(model: BertModel, seqs: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.forward_packed(s, Packing([len(s)])) for s in seqs])


@pytest.mark.parametrize("lengths", [[40, 37, 20, 19, 5, 5, 1], [3, 30, 3, 30, 12], [7, 7, 7]])
def test_grouped_attention_matches_each_sequence_alone(model, lengths):
    seqs = [torch.randint(5, 128, (n,)) for n in lengths]
    want = alone(model, seqs)
    for slack, min_waste in [(1.0, 0), (1.3, 0), (1e9, 0)]:  # one group per length ... one group for all
        packing = Packing(lengths, slack=slack, min_waste=min_waste)
        with torch.no_grad():
            got = model.forward_packed(torch.cat(seqs), packing)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    runs = 1 + sum(a != b for a, b in zip(lengths, lengths[1:], strict=False))
    assert len(Packing(lengths, slack=1.0, min_waste=0).groups) == runs  # no padding at all
    assert len(Packing(lengths, slack=1e9, min_waste=0).groups) == 1


def test_groups_follow_the_padding_they_would_waste():
    assert len(Packing([40, 39, 38, 37]).groups) == 1  # similar lengths share one attention call
    assert len(Packing([200, 190, 20, 18, 17]).groups) == 2  # the short ones do not pay for 200
    assert [len(g.keep) if g.keep is not None else g.n * g.T for g in Packing([200, 190, 20, 18]).groups] == [
        390,
        38,
    ]
    assert Packing([3, 1, 2]).positions.tolist() == [0, 1, 2, 0, 0, 1]


def test_padded_forward_matches_packed(model):
    ids = torch.randint(5, 128, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 6 + [0] * 3])
    with torch.no_grad():
        out = model(ids, mask)
    assert out.shape == (3, 9, 64) and out[1, 4:].abs().sum() == 0
    want = alone(model, [ids[0], ids[1, :4], ids[2, :6]])
    torch.testing.assert_close(out[mask.bool()], want, atol=1e-5, rtol=1e-4)
