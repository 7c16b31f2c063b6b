"""Removing a CNN's convolution channels: the smallest filters go, every later layer shrinks to match, and
the smaller model is the CNN its new config builds."""

from __future__ import annotations

import pytest
import torch

from maas.compress.conv_channels import prune_conv_channels
from maas.errors import InvalidRequestError
from maas.models import zoo


@pytest.mark.parametrize("batch_norm", [False, True])
def test_channels_that_carry_nothing_go_first_and_the_output_does_not_change(batch_norm):
    torch.manual_seed(0)
    cnn = zoo.build(
        "cnn", {"channels": [8, 16], "batch_norm": batch_norm}, input_shape=(1, 8, 8), num_classes=10
    )
    cnn.eval()
    dead = {
        0: [1, 4, 6, 7],
        3 + batch_norm: [0, 2, 3, 5, 9, 10, 12, 15],
    }  # half of each convolution's channels
    with torch.no_grad():
        for i, chans in dead.items():
            conv = cnn.features[i]
            conv.weight[chans] = 0.0  # a zero filter and bias: the channel is 0 after ReLU, whatever comes in
            conv.bias[chans] = 0.0
            if batch_norm:  # zero gamma and beta: the normalised channel is 0 too
                cnn.features[i + 1].weight[chans] = 0.0
                cnn.features[i + 1].bias[chans] = 0.0
    x = torch.rand(5, 1, 8, 8)
    want = cnn(x)
    kept = prune_conv_channels(cnn, 0.5)
    assert kept == [4, 8]
    assert cnn.features[0].weight.shape == (4, 1, 3, 3) and cnn.features[3 + batch_norm].weight.shape == (
        8,
        4,
        3,
        3,
    )
    assert cnn.head[1].in_features == 8 * 2 * 2
    torch.testing.assert_close(cnn(x), want)
    small = zoo.build(
        "cnn", {"channels": kept, "batch_norm": batch_norm}, input_shape=(1, 8, 8), num_classes=10
    )
    small.load_state_dict(cnn.state_dict())  # the config's new channel counts rebuild it
    torch.testing.assert_close(small.eval()(x), want)


def test_shares_that_leave_nothing_are_refused():
    cnn = zoo.build("cnn", {"channels": [2, 4]}, input_shape=(1, 8, 8), num_classes=10)
    for share in (0.0, 1.0, 0.9):
        with pytest.raises(InvalidRequestError):
            prune_conv_channels(cnn, share)
