import torch

from interplab.instrument import site_values
from interplab.interventions.fixed_attention import fixed_attention_hooks, mean_patterns, perturbation_scan
from interplab.models import Transformer, TransformerConfig


def small_model():
    return Transformer(TransformerConfig(d_vocab=8, n_ctx=3, d_model=16, n_heads=2, d_mlp=32), seed=1)


TOKS = torch.randint(0, 8, (64, 3), generator=torch.Generator().manual_seed(0))


def test_mean_patterns_and_hooks_fix_every_input_to_the_mean():
    m = small_model()
    means = mean_patterns(m, TOKS, positions=[-1])
    pat = site_values(m, TOKS, "blocks.0.attn.hook_pattern", positions=[-1])
    assert torch.allclose(means["blocks.0.attn.hook_pattern"], pat.mean(0))
    assert torch.allclose(means["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(2, 1))
    fixed = site_values(m, TOKS, "blocks.0.hook_attn_out", fwd_hooks=fixed_attention_hooks(means), positions=[-1])
    # with a fixed pattern the attention output is linear in the values: check against a direct computation
    v = site_values(m, TOKS, "blocks.0.attn.hook_v", positions=[-1])  # [N, pos, head, d_head]
    z = torch.einsum("hqp,nphk->nqhk", means["blocks.0.attn.hook_pattern"], v)
    out = torch.einsum("nqhk,hkd->nqd", z, m.blocks[0].attn.W_O) + m.blocks[0].attn.b_O
    assert torch.allclose(fixed, out, atol=1e-5)


def test_perturbation_scan_interpolates_between_fixed_and_full():
    m = small_model()
    labels = torch.randint(0, 8, (64,), generator=torch.Generator().manual_seed(1))
    scan = perturbation_scan(m, TOKS, xs=[0.0, 0.5, 1.0], labels=labels, positions=[-1])
    assert scan["x"] == [0.0, 0.5, 1.0] and scan["agree"][-1] == 1.0
    assert len(scan["acc"]) == 3 and all(0 <= a <= 1 for a in scan["acc"])
    assert scan["agree"][0] < 1.0  # a random model does use attention
