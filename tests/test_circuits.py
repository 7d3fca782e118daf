"""Edge graph, edge patching (against explicit computations), ACDC, EAP, EAP-IG, toy IOI."""

import pytest
import torch
import torch.nn.functional as F

from interplab.errors import InterplabError
from interplab.interventions.circuits import (acdc, component_edges, eap, eap_ig, faithfulness, kl_divergence,
                                              precision_recall)
from interplab.interventions.edges import Graph, mean_sender_outputs, run_edges, sender_outputs
from interplab.models import Transformer, TransformerConfig
from interplab.tasks.ioi import ioi_corrupt, ioi_task


def _model(**kw):
    cfg = dict(d_vocab=7, n_ctx=5, d_model=16, n_layers=2, n_heads=2, d_mlp=12, normalization="LN")
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg), seed=1)


def _pair(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(7, (n, 5), generator=g), torch.randint(7, (n, 5), generator=g)


def _metric(logits):
    return logits[:, -1, 2].mean() - logits[:, -1, 3].mean()


def test_graph_counts_and_names():
    g = Graph.from_model(_model())
    # senders: embed, 2 heads, MLP per layer; receivers: q/k/v per head and the MLP per layer, logits
    assert g.senders == ("embed", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1")
    assert len(g.receivers) == 2 * 7 + 1
    # layer 0: 6 inputs x 1 + MLP x 3; layer 1: 6 x 4 + MLP x 6; logits x 7
    assert g.n_edges == 6 + 3 + 24 + 6 + 7
    assert "a0.h1->a1.h0.k" in g.edges() and "a1.h0->a0.h1.q" not in g.edges()
    with pytest.raises(InterplabError):
        g.edge_set(["a1.h0->a0.h1.q"])


def _explicit_layer1(m, resid1, k_input_h0):
    """Layer 1 (attention then MLP) and the logits by hand, with head 0's key computed from its own input."""
    blk = m.blocks[1]
    a = blk.attn
    x = blk.ln1(resid1)
    q = torch.einsum("bpd,hde->bphe", x, a.W_Q) + a.b_Q
    k = torch.einsum("bpd,hde->bphe", x, a.W_K) + a.b_K
    k[:, :, 0] = blk.ln1(k_input_h0) @ a.W_K[0] + a.b_K[0]
    v = torch.einsum("bpd,hde->bphe", x, a.W_V) + a.b_V
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * a.scale
    n = resid1.shape[1]
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    z = torch.einsum("bhqk,bkhe->bqhe", scores.softmax(-1), v)
    mid = resid1 + torch.einsum("bqhe,hed->bqd", z, a.W_O) + a.b_O
    post = mid + F.relu(blk.ln2(mid) @ blk.mlp.W_in + blk.mlp.b_in) @ blk.mlp.W_out + blk.mlp.b_out
    return m.ln_final(post) @ m.W_U + m.b_U


def test_single_edge_patch_matches_an_explicit_computation():
    m = _model()
    clean, corrupt = _pair()
    g = Graph.from_model(m)
    corr = sender_outputs(m, g, corrupt)
    mask = g.mask()
    mask[g.receiver_index("a1.h0.k"), g.sender_index("a0.h1")] = 1.0
    with torch.no_grad():
        got = run_edges(m, g, clean, corr, mask)
        _, c = m.run_with_cache(clean)
        _, x = m.run_with_cache(corrupt)
        head = lambda acts: torch.einsum("bpe,ed->bpd", acts["blocks.0.attn.hook_z"][:, :, 1], m.blocks[0].attn.W_O[1])  # noqa: E731
        resid1 = c["blocks.1.hook_resid_pre"]
        want = _explicit_layer1(m, resid1, resid1 - head(c) + head(x))
        assert not torch.allclose(got, m(clean), atol=1e-4)  # the patch does something
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_patching_all_edges_or_all_embedding_edges_gives_the_corrupted_run():
    for kw in ({}, {"d_mlp": None}, {"normalization": "none", "bias": False}):
        m = _model(**kw)
        clean, corrupt = _pair()
        g = Graph.from_model(m)
        corr = sender_outputs(m, g, corrupt)
        with torch.no_grad():
            torch.testing.assert_close(run_edges(m, g, clean, corr, g.mask()), m(clean))
            torch.testing.assert_close(run_edges(m, g, clean, corr, g.mask(1.0)), m(corrupt), atol=1e-5, rtol=1e-5)
            embed_only = torch.zeros_like(g.mask())
            embed_only[:, 0] = 1.0
            torch.testing.assert_close(run_edges(m, g, clean, corr, embed_only), m(corrupt), atol=1e-5, rtol=1e-5)


def test_sender_outputs_sum_to_the_final_residual_stream():
    m = _model(normalization="none", bias=False)
    clean, _ = _pair()
    g = Graph.from_model(m)
    with torch.no_grad():
        resid = m(clean, return_type="resid")
    torch.testing.assert_close(sender_outputs(m, g, clean).sum(2), resid, atol=1e-5, rtol=1e-5)


def test_mean_ablation_of_every_edge_gives_the_logits_of_the_mean_outputs():
    m = _model(normalization="none", bias=False, d_mlp=None, n_layers=1)
    clean, other = _pair(n=6)
    g = Graph.from_model(m)
    mean = mean_sender_outputs(m, g, other)
    with torch.no_grad():
        out = run_edges(m, g, clean, mean, g.mask(1.0))
    torch.testing.assert_close(out, (mean.sum(2) @ m.W_U).expand_as(out), atol=1e-5, rtol=1e-5)


def test_eap_is_the_first_order_effect_of_each_edge():
    m = _model(normalization="none", bias=False, d_mlp=None, n_layers=1)  # logits are linear in every edge
    clean, corrupt = _pair()
    g = Graph.from_model(m)
    corr = sender_outputs(m, g, corrupt)
    scores = eap(m, g, clean, corr, _metric)
    r = g.receiver_index("logits")
    with torch.no_grad():
        for s in range(len(g.senders)):
            mask = g.mask()
            mask[r, s] = 1.0
            true = _metric(run_edges(m, g, clean, corr, mask)) - _metric(m(clean))
            assert torch.isclose(scores[r, s], true, atol=1e-5)
    assert scores[~g.allowed].abs().max() == 0


def test_eap_ig_shapes_steps_and_errors():
    """One step at the clean input is EAP (see the doctest); more steps move the gradients along the path."""
    m = _model(normalization="none", bias=False, d_mlp=None, n_layers=1)
    clean, corrupt = _pair()
    g = Graph.from_model(m)
    coarse = eap_ig(m, g, clean, corrupt, _metric, steps=1)
    fine = eap_ig(m, g, clean, corrupt, _metric, steps=20)
    assert coarse.shape == fine.shape == g.allowed.shape
    assert not torch.allclose(coarse, fine)
    with pytest.raises(InterplabError):
        eap_ig(m, g, clean, corrupt[:, :4], _metric)


def test_acdc_keeps_only_edges_that_matter():
    m = _model(d_mlp=None)
    clean, corrupt = _pair(n=8)
    g = Graph.from_model(m)
    corr = sender_outputs(m, g, corrupt)
    everything = acdc(m, g, clean, corr, threshold=0.0, metric=_metric, quiet=True)
    nothing = acdc(m, g, clean, corr, threshold=1e9, quiet=True)
    assert nothing.n_edges == 0 and everything.n_edges > 0
    # threshold 0 removes only edges whose removal does not move the metric away; the result is faithful
    assert faithfulness(m, g, clean, corr, everything.keep, _metric) == pytest.approx(1.0, abs=1e-4)
    mid = acdc(m, g, clean, corr, threshold=0.05, quiet=True)
    assert mid.distance < 0.05 * g.n_edges  # each removal added less than the threshold
    with torch.no_grad():
        kept_kl = float(kl_divergence(run_edges(m, g, clean, corr, (~mid.keep).float()), m(clean)))
    assert kept_kl == pytest.approx(mid.distance, rel=1e-4, abs=1e-6)


def test_precision_recall_and_component_edges():
    g = Graph.from_model(_model(d_mlp=None))
    known = g.edge_set(["a0.h1->a1.h0.k", "a1.h0->logits"])
    found = g.edge_set(["a0.h1->a1.h0.k", "embed->a1.h0.k"])
    assert precision_recall(found, known) == (0.5, 0.5)
    est = {k: torch.zeros(2, 2) for k in ("z", "q", "k", "v")}
    est["z"][0, 1] = est["z"][1, 0] = est["k"][1, 0] = 1.0
    edges = set(g.edges(component_edges(g, est, 0.5)))
    assert edges == {"embed->a1.h0.k", "a0.h1->a1.h0.k", "embed->logits", "a0.h1->logits", "a1.h0->logits"}


def test_ioi_task_labels_and_corruption():
    t = ioi_task(n_names=5, max_filler=2, n_examples=50, seed=3)
    n = 5
    for x, y in zip(t.inputs.tolist(), t.labels.tolist()):
        names = [tok for tok in x if tok < n]
        assert len(names) == 3 and names[2] in names[:2] and y in names[:2] and y != names[2]
        assert x[0] == n and x[-1] == n + 3
    c = ioi_corrupt(t, t.inputs, seed=0)
    for x in c.tolist():
        names = [tok for tok in x if tok < n]
        assert len(set(names)) == 3  # ABC: no name repeats


def test_verification_cost_and_subsampling_bound():
    from interplab.interventions.diagnostics import subsampling_bound, verification_cost
    from interplab.interventions.patching import activation_patching

    t = torch.tensor([4.0, -3.0, 0.2, 0.0, 1.0])
    assert verification_cost(t, t / 2) == {"n_above": 3, "cost": 3, "missed_in_top": 0}
    assert verification_cost(t, torch.tensor([4.0, 0.0, 0.2, 0.1, 1.0]))["cost"] == 5
    m = _model(d_mlp=None)
    clean, corrupt = _pair(n=8)
    true = activation_patching(m, clean, corrupt, _metric, "z", per_position=True)
    cand = {"z": torch.ones_like(true, dtype=torch.bool)}
    out = subsampling_bound(m, clean, corrupt, _metric, cand, n_samples=400, p=0.2, seed=0, quiet=True)
    # the subsampling estimate follows the true single-component effects, and the bound is above the estimate
    est = out["estimate"]["z"].flatten()
    assert torch.corrcoef(torch.stack([est, true.flatten()]))[0, 1] > 0.5
    assert out["max_upper"] >= float(true.abs().max()) * 0.5
    with pytest.raises(InterplabError):
        subsampling_bound(m, clean, corrupt, _metric, {"neuron": torch.ones(2, 2, dtype=torch.bool)}, quiet=True)


def test_eap_with_exact_attention_tracks_query_and_key_edges_better():
    m = _model(d_mlp=None)
    clean, corrupt = _pair()
    g = Graph.from_model(m)
    corr = sender_outputs(m, g, corrupt)
    plain, exact = eap(m, g, clean, corr, _metric), eap(m, g, clean, corr, _metric, exact_attention=True)
    true = torch.zeros_like(plain)
    with torch.no_grad():
        for r, s in torch.nonzero(g.allowed).tolist():
            mask = g.mask()
            mask[r, s] = 1.0
            true[r, s] = _metric(run_edges(m, g, clean, corr, mask)) - _metric(m(clean))
    qk = torch.tensor([name.endswith((".q", ".k")) for name in g.receivers])[:, None] & g.allowed
    err_plain, err_exact = (plain - true)[qk].abs().sum(), (exact - true)[qk].abs().sum()
    assert err_exact < 0.5 * err_plain
    assert torch.equal(plain[~qk], exact[~qk])  # values, MLPs and logits keep the plain estimate


def test_eap_is_the_slope_of_every_edge_patch_at_zero():
    """Edges into queries, keys, values, MLPs and logits, through LayerNorm and attention: EAP's score is the
    derivative of the patched metric (central differences of patch_curve, float64)."""
    from interplab.interventions.circuits import patch_curve

    m = _model().double()
    clean, corrupt = _pair()
    g = Graph.from_model(m)
    corr = sender_outputs(m, g, corrupt)
    scores = eap(m, g, clean, corr, _metric)
    for name in ("a0.h1->a1.h0.q", "a0.h0->a1.h1.k", "embed->a1.h0.v", "embed->a0.h1.k", "a0.h1->m0", "m0->a1.h1.k",
                 "a1.h0->m1", "m1->logits"):
        edge = g.edge_set([name])
        lo, hi = patch_curve(m, g, clean, corr, edge, _metric, [-1e-4, 1e-4])
        slope = float(hi - lo) / 2e-4
        assert abs(float(scores[edge]) - slope) < 1e-5 * max(1.0, abs(slope)), name
    # a large patch is not its slope: the curve bends (attention, LayerNorm)
    curve = patch_curve(m, g, clean, corr, g.edge_set(["a0.h0->a1.h1.k"]), _metric, [0.5, 1.0])
    assert not torch.isclose(curve[1], 2 * curve[0], rtol=1e-3)
    with pytest.raises(InterplabError):
        patch_curve(m, g, clean, corr, torch.zeros_like(g.allowed), _metric)
