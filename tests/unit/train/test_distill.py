import pytest
import torch
import torch.nn.functional as F

from maas.errors import MaasError
from maas.train.config import ConfigError, parse_config
from maas.train.distill import distill_loss


def test_hinton_loss_is_kl_of_softened_outputs_times_t_squared_plus_hard_loss():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    T, a = 3.0, 0.25
    p = F.softmax(t / T, -1)
    kl = (p * (p.log() - F.log_softmax(s / T, -1))).sum(-1).mean()
    want = a * T * T * kl + (1 - a) * F.cross_entropy(s, y)
    assert float(distill_loss(s, t, y, T, a)) == pytest.approx(float(want), rel=1e-5)
    assert float(distill_loss(s, t, y, T, 0.0)) == pytest.approx(float(F.cross_entropy(s, y)))
    assert float(distill_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-6)  # the teacher itself: no loss


def test_lm_logits_are_scored_per_token_and_mismatched_vocabularies_refused():
    s, t = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    y = torch.randint(0, 16, (2, 5))
    flat = distill_loss(s.reshape(10, 16), t.reshape(10, 16), y.reshape(10), 2.0, 0.5)
    assert float(distill_loss(s, t, y, 2.0, 0.5)) == pytest.approx(float(flat))
    with pytest.raises(MaasError, match="share the labels"):
        distill_loss(s, torch.randn(2, 5, 17), y, 2.0, 0.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("distill: {teacher: t, temperature: 0}", "temperature"),
        ("distill: {teacher: t, alpha: 1.5}", "alpha"),
        ("distill: {teacher: t}\ndistributed: {strategy: ps}", "ddp"),
        ("distill: {teacher: t, tau: 2}", "tau"),
    ],
)
def test_bad_distill_settings_are_refused(extra, message):
    text = "name: s\nmodel: {arch: mlp}\ndata: {kind: digits}\ntrain: {steps: 1}\n" + extra
    with pytest.raises(ConfigError, match=message):
        parse_config(text)
