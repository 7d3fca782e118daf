"""Metrics: loss recovered by splicing, MMCS, density counts, per-feature geometry."""

import torch

from interplab.instrument import Site
from interplab.models import MLP, MLPConfig, Transformer, TransformerConfig
from interplab.sae.metrics import (cross_entropy_at, enc_dec_cosine, evaluate_sae, kurtosis, loss_recovered, mmcs,
                                   neuron_sparsity)
from interplab.sae.model import SAE, SAEConfig


def test_loss_recovered_is_one_for_identity_and_zero_for_ablation():
    m = Transformer(TransformerConfig(d_vocab=7, n_ctx=3, d_model=16, n_heads=2, d_mlp=32), seed=0)
    x = torch.randint(0, 7, (50, 3), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(1))
    site = Site("blocks.0.mlp.hook_post", position=-1)
    ce = cross_entropy_at(-1)
    ident = loss_recovered(m, x, y, site, lambda a: a, ce)
    assert abs(ident["recovered_zero"] - 1) < 1e-6 and abs(ident["sae"] - ident["clean"]) < 1e-6
    zero = loss_recovered(m, x, y, site, torch.zeros_like, ce)
    assert abs(zero["recovered_zero"]) < 1e-6 and zero["recovered_mean"] != 1.0
    # only the named position is replaced: splicing zeros elsewhere changes nothing at the last position
    other = loss_recovered(m, x, y, Site("blocks.0.mlp.hook_post", position=0), torch.zeros_like, ce)
    assert abs(other["sae"] - other["clean"]) < 1e-6


def test_mmcs_finds_a_permuted_and_rescaled_dictionary():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(20, 8, generator=g)
    learned = torch.cat([3 * true[torch.randperm(20, generator=g)], torch.randn(10, 8, generator=g)])
    assert abs(mmcs(learned, true) - 1) < 1e-6
    assert mmcs(learned[:10], true) < 0.95  # half the features missing


def test_feature_geometry_metrics():
    W = torch.zeros(2, 16)
    W[0, 3] = 1.0
    W[1] = 0.25
    top1, next9 = neuron_sparsity(W)
    assert top1.tolist() == [1.0, 1 / 16] and abs(next9[1].item() - 9 / 16) < 1e-6
    k = kurtosis(W)
    assert k[0] > 10
    sae = SAE(SAEConfig(d_in=4, d_sae=6))
    assert torch.allclose(enc_dec_cosine(sae), torch.ones(6), atol=1e-6)  # encoder initialised as decoder^T


def test_evaluate_counts_dead_features():
    sae = SAE(SAEConfig(d_in=3, d_sae=5))
    with torch.no_grad():
        sae.b_enc[:2] = -100.0
    r = evaluate_sae(sae, torch.randn(200, 3))
    assert r["dead"] >= 2 and r["below_1e-4"] >= r["dead"]


def test_site_reads_every_row_without_position():
    m = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=2))
    sae = SAE(SAEConfig(d_in=8, d_sae=16))
    x, y = torch.randn(30, 4), torch.randint(0, 2, (30,))
    r = loss_recovered(m, x, y, Site("layers.0.hook_post"), lambda a: sae(a).detach(),
                       lambda out, t: torch.nn.functional.cross_entropy(out, t))
    assert set(r) == {"clean", "sae", "zero", "mean", "recovered_zero", "recovered_mean"}
