import torch

from interplab.analysis.logit_attribution import (direct_logit_attribution, logit_diff, logit_diff_bias,
                                                  logit_diff_direction, pull_back)
from interplab.models import ConvNet, ConvNetConfig


def test_dla_sums_to_the_logit_difference_of_a_convnet():
    net = ConvNet(ConvNetConfig(channels1=2, channels2=3, d_fc=10), seed=1)
    x = torch.rand(7, 28, 28, generator=torch.Generator().manual_seed(0))
    logits, cache = net.run_with_cache(x)
    v = logit_diff_direction(net.fc2.weight.detach().T)
    dla = direct_logit_attribution(cache["fc1.hook_post"], v)
    total = dla.sum(1) + logit_diff_bias(net.fc2.bias.detach())
    assert torch.allclose(total, logit_diff(logits), atol=1e-5)
    # zeroing the unit with the largest attribution moves the logit difference by exactly that amount
    u = int(dla[0].abs().argmax())
    patched = net.run_with_hooks(x[:1], fwd_hooks=[("fc1.hook_post", lambda a, hook: a.index_fill(1, torch.tensor([u]), 0.0))])
    assert torch.allclose(logit_diff(logits[:1]) - logit_diff(patched), dla[0, u], atol=1e-5)


def test_pull_back_through_a_linear_map():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(5, 3, generator=g)
    x = torch.randn(4, 5, generator=g)
    d = torch.randn(3, generator=g)
    assert torch.allclose((x @ M) @ d, x @ pull_back(d, M), atol=1e-5)
