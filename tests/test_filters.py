import torch

from interplab.analysis.filters import best_rule, binary_filter, combine, effective_embeddings, filter_image, near_threshold
from interplab.instrument import site_values
from interplab.interventions.fixed_attention import fixed_attention_hooks, mean_patterns
from interplab.models import Transformer, TransformerConfig


def test_effective_embeddings_reproduce_the_fixed_attention_model_and_filters_are_projections():
    p = 7
    m = Transformer(TransformerConfig(d_vocab=p + 1, n_ctx=3, d_model=16, n_heads=4, d_mlp=32), seed=3)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    toks = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)
    means = mean_patterns(m, toks, positions=[-1])
    eff = effective_embeddings(m, means["blocks.0.attn.hook_pattern"], fixed_tokens={2: p})
    mid = site_values(m, toks, "blocks.0.hook_resid_mid", fwd_hooks=fixed_attention_hooks(means), positions=[-1])
    assert torch.allclose(eff.resid(toks), mid[:, -1].double(), atol=1e-5)
    full = site_values(m, toks, "blocks.0.hook_resid_mid", positions=[-1])
    assert not torch.allclose(eff.resid(toks), full[:, -1].double(), atol=1e-3)  # real attention differs
    v = torch.randn(16, generator=torch.Generator().manual_seed(0))
    img = filter_image(eff, v, n_values=p)
    assert torch.allclose(img.reshape(-1), mid[:, -1].double() @ v.double(), atol=1e-5)


def test_binary_rules_and_near_threshold():
    img0 = torch.arange(16.0).reshape(4, 4)
    img1 = img0.T
    f0, f1 = binary_filter(img0, 7.5), binary_filter(img1, 7.5)
    target = (f0 & ~f1).reshape(-1)
    assert best_rule([f0.reshape(-1), f1.reshape(-1)], target) == ("and", (False, True), 1.0)
    assert combine([f0, f1], "or").sum() == (f0 | f1).sum()
    # the std of 0..15 is 4.76: 0.1 std (0.476) excludes 7 and 8, 0.11 std (0.52) includes them
    assert near_threshold([img0], [7.5], width=0.1).sum() == 0
    assert near_threshold([img0], [7.5], width=0.11).sum() == 2
