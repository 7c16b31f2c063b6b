import copy

import torch

from maas.kernels.linear import pack_linears
from maas.models.llama import LlamaConfig, LlamaForCausalLM, rope_inv_freq


def model(**kw):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig.tiny(**kw)).eval()


def test_fused_projections_compute_the_same_logits():
    for bias in (False, True):
        m = model(attention_bias=bias)
        ids = torch.randint(0, 256, (2, 9))
        with torch.no_grad():
            ref = m(ids)
            f = copy.deepcopy(m)
            f.fuse_projections()
            torch.testing.assert_close(f(ids), ref, rtol=1e-5, atol=1e-5)


def test_fp16_packed_weights_stay_close_at_any_batch_size():
    m = model()
    ids = torch.randint(0, 256, (4, 7))
    with torch.no_grad():
        ref = m(ids)
        p = pack_linears(copy.deepcopy(m), "float16")
        got = p(ids)
        alone = p(ids[1:2])
    assert (got - ref).abs().max() < 1e-2
    # BLAS kernels for 1-2 rows round differently from wider ones (fp32 too): close, not bitwise
    assert (alone[0] - got[1]).abs().max() < 1e-5


def test_causal_attention_ignores_the_future():
    m = model()
    ids = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        full = m(ids)
        prefix = m(ids[:, :6])
    torch.testing.assert_close(full[:, :6], prefix, rtol=1e-5, atol=1e-5)


def test_llama3_rope_scaling_slows_low_frequencies_only():
    base = LlamaConfig.tiny(head_dim=64, rope_theta=500000.0)
    scaled = LlamaConfig.tiny(
        head_dim=64,
        rope_theta=500000.0,
        rope_scaling=tuple(
            sorted(
                {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                }.items()
            )  # fmt: skip
        ),
    )
    a, b = rope_inv_freq(base), rope_inv_freq(scaled)
    assert torch.allclose(a[:4], b[:4])  # high frequencies untouched
    assert torch.allclose(a[-1] / 8, b[-1])  # the lowest divided by the factor
