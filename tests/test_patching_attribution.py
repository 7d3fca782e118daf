"""Activation patching, path patching, AtP, AtP* and direct logit attribution."""

import pytest
import torch

from interplab.errors import InterplabError
from interplab.instrument import trace
from interplab.interventions.attribution import agreement, atp, atp_star, direct_logit_attribution
from interplab.interventions.patching import activation_patching, path_patching
from interplab.models import Transformer, TransformerConfig


def _pair(n=6, pos=5, vocab=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(vocab, (n, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1:3] = torch.randint(vocab, (n, 2), generator=g)
    return clean, corrupt


def _metric(logits):
    return logits[:, -1, 2].mean() - logits[:, -1, 3].mean()


def _model(**kw):
    cfg = dict(d_vocab=7, n_ctx=5, d_model=16, n_layers=2, n_heads=2, d_mlp=None, bias=False)
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg), seed=3)


def test_activation_patching_matches_a_hand_made_patch():
    m = _model(d_mlp=12, normalization="LN")
    clean, corrupt = _pair()
    grids = activation_patching(m, clean, corrupt, _metric, ["z", "neuron", "resid_pre"], per_position=True)
    assert grids["z"].shape == (2, 2, 5) and grids["neuron"].shape == (2, 12, 5)
    assert grids["resid_pre"].shape == (2, 5)
    _, acts = m.run_with_cache(clean)
    base = _metric(m(corrupt))
    # head 1 of layer 1 at position 4, by trace
    tr = trace(m, corrupt)
    for site in tr:
        if site.name == "blocks.1.attn.hook_z":
            mask = torch.zeros(5, 2, 1, dtype=torch.bool)
            mask[4, 1] = True
            site.patch(acts["blocks.1.attn.hook_z"], mask)
    assert torch.isclose(grids["z"][1, 1, 4], _metric(tr.output) - base, atol=1e-5)
    # positions before the corruption carry nothing; restoring everything restores the metric
    assert grids["resid_pre"][0, 0].abs() < 1e-6
    total = _metric(m(clean)) - base
    assert torch.isclose(activation_patching(m, clean, corrupt, _metric, "resid_pre")[0], total, atol=1e-5)


def test_bad_kinds_and_metrics_are_clear_errors():
    m = _model()
    clean, corrupt = _pair()
    with pytest.raises(InterplabError, match="no neuron sites"):
        activation_patching(m, clean, corrupt, _metric, "neuron")
    with pytest.raises(InterplabError, match="scalar"):
        activation_patching(m, clean, corrupt, lambda x: x[:, -1, 0], "z")
    with pytest.raises(InterplabError, match="same shape"):
        atp(m, clean, corrupt[:, :4], _metric, "z")
    with pytest.raises(InterplabError, match="per position"):
        activation_patching(m, clean, corrupt, _metric, "q", per_position=True, model_kwargs={"positions": [-1]})


def test_atp_is_exact_where_the_model_is_linear_and_atpstar_fixes_attention():
    # 1 layer, attention only, no LayerNorm: the only nonlinearity is the softmax
    m = _model(n_layers=1)
    with torch.no_grad():
        m.blocks[0].attn.W_Q.mul_(6.0)  # sharpen attention so that linearising it is poor
        m.blocks[0].attn.W_K.mul_(6.0)
    clean, corrupt = _pair(seed=1)
    corrupt[:, -1] = (clean[:, -1] + 1) % 7
    kinds = ["z", "v", "pattern", "q", "k"]
    true = activation_patching(m, clean, corrupt, _metric, kinds, per_position=True)
    est = atp(m, clean, corrupt, _metric, kinds, per_position=True)
    star = atp_star(m, clean, corrupt, _metric, kinds, per_position=True)
    for k in ("z", "v", "pattern"):
        assert torch.allclose(est[k], true[k], atol=1e-4), k
    for k in ("q", "k"):
        assert torch.allclose(star[k], true[k], atol=1e-4), k
    # plain AtP is off through the softmax
    assert (est["q"] - true["q"]).abs().max() > 0.1 * true["q"].abs().max() > 0
    whole = atp_star(m, clean, corrupt, _metric, "k")
    assert torch.allclose(whole, activation_patching(m, clean, corrupt, _metric, "k"), atol=1e-4)


def test_graddrop_only_adds_larger_estimates():
    m = _model(n_layers=3, normalization="LN")
    clean, corrupt = _pair(seed=2)
    plain = atp_star(m, clean, corrupt, _metric, ["z", "resid_pre"], grad_drop=False)
    dropped = atp_star(m, clean, corrupt, _metric, ["z", "resid_pre"])
    for k in plain:
        assert (dropped[k].abs() >= plain[k].abs() - 1e-7).all()
    # the last layer has no later layer to drop, so its heads keep the plain estimate
    assert torch.allclose(dropped["z"][-1], plain["z"][-1])


def test_path_patching_splits_the_total_effect():
    m = _model(n_layers=3)
    clean, corrupt = _pair(seed=4)
    sender = (0, 1)
    paths = [(layer, h, x) for layer in (1, 2) for h in range(2) for x in "qkv"]
    direct = path_patching(m, clean, corrupt, _metric, sender, ["logits"])
    via_all = path_patching(m, clean, corrupt, _metric, sender, paths + ["logits"])
    total = activation_patching(m, clean, corrupt, _metric, "z")[0, 1]
    # with three layers, layer 2 also hears layer 1's change, so paths do not simply add up,
    # but the direct path equals the sender's direct logit attribution difference
    dla_clean = direct_logit_attribution(m, clean, torch.eye(7)[2] - torch.eye(7)[3])[:, -1, 0, 1].mean()
    dla_corr = direct_logit_attribution(m, corrupt, torch.eye(7)[2] - torch.eye(7)[3])[:, -1, 0, 1].mean()
    assert torch.isclose(direct, dla_clean - dla_corr, atol=1e-5)
    assert via_all.abs() > 0 and total.abs() > 0
    with pytest.raises(InterplabError, match="layer after"):
        path_patching(m, clean, corrupt, _metric, (1, 0), [(1, 0, "q")])


def test_dla_per_neuron_sums_to_the_mlp_output():
    m = _model(n_layers=1, d_mlp=10)
    x, _ = _pair()
    d = torch.randn(7, generator=torch.Generator().manual_seed(0))
    dla = direct_logit_attribution(m, x, d, kind="neuron")
    _, acts = m.run_with_cache(x)
    assert torch.allclose(dla.sum((2, 3)), acts["blocks.0.hook_mlp_out"] @ m.W_U @ d, atol=1e-5)
    per_example = direct_logit_attribution(m, x, d.expand(6, 7), kind="neuron", model_kwargs={"positions": [-1]})
    assert torch.allclose(per_example[:, 0], dla[:, -1], atol=1e-5)


def test_agreement_counts():
    t = {"a": torch.tensor([[10.0, 0.0], [0.5, 3.0]])}
    e = {"a": torch.tensor([[9.0, 0.1], [0.4, 0.2]])}
    r = agreement(t, e, k=2, threshold=0.1)
    assert r["recall"] == 0.5 and r["false_negatives"] == 1 and r["n_components"] == 4


def test_dla_with_layernorm_sums_to_the_logits():
    m = _model(n_layers=2, normalization="LN", bias=True)
    x, _ = _pair()
    d = torch.eye(7)[2] - torch.eye(7)[5]
    dla = direct_logit_attribution(m, x, d)
    logits, acts = m.run_with_cache(x)
    scale = acts["ln_final.hook_scale"]
    read = (m.W_U @ d) * m.ln_final.w
    rest = acts["hook_embed"] + acts["hook_pos_embed"] + sum(m.blocks[i].attn.b_O for i in range(2))
    rest_term = ((rest - rest.mean(-1, keepdim=True)) / scale) @ read + m.ln_final.b @ (m.W_U @ d) + m.b_U @ d
    assert torch.allclose(dla.sum((2, 3)) + rest_term, logits @ d, atol=1e-4)


def test_atpstar_recomputes_attention_for_residual_nodes():
    # 1 layer, attention only, no LayerNorm, sharp attention: with the heads' outputs recomputed
    # exactly and everything after them linear, AtP* is exact for per-position residual nodes
    m = _model(n_layers=1)
    with torch.no_grad():
        m.blocks[0].attn.W_Q.mul_(12.0)
        m.blocks[0].attn.W_K.mul_(12.0)
    clean, corrupt = _pair(seed=1)
    corrupt[:, -1] = (clean[:, -1] + 1) % 7
    true = activation_patching(m, clean, corrupt, _metric, "resid_pre", per_position=True)
    est = atp(m, clean, corrupt, _metric, "resid_pre", per_position=True)
    star = atp_star(m, clean, corrupt, _metric, "resid_pre", per_position=True, grad_drop=False)
    assert torch.allclose(star, true, atol=1e-5)
    assert (est - true).abs().max() > 0.2 * true.abs().max() > 0
    # whole-layer residual nodes keep the linear estimate
    assert torch.allclose(atp_star(m, clean, corrupt, _metric, "resid_pre", grad_drop=False),
                          atp(m, clean, corrupt, _metric, "resid_pre"))
