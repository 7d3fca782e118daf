"""Probes recover a planted linear feature and fail on XOR; non-linear excess and linear structure."""

import pytest
import torch

from interplab.analysis.linearity import (ablation_effect_correlation, linearity_break, nonlinear_excess,
                                          nonlinear_excess_table)
from interplab.analysis.probes import probe, probe_sites, unit_auc
from interplab.instrument import gather_positions
from interplab.errors import InterplabError
from interplab.models import Transformer, TransformerConfig


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_probe_recovers_a_planted_linear_feature():
    # a binary feature written along a random direction on top of isotropic noise
    y = (torch.rand(600, generator=torch.Generator().manual_seed(0)) < 0.5).long()
    w = _gaussian(1, 20, 1)[0]
    X = _gaussian(600, 20, 0) + 3.0 * (2 * y[:, None] - 1) * w / w.norm()
    r = probe(X, y, n_splits=5, seed=0)
    assert r.mean >= 0.99, r.scores
    assert len(r.scores) == 5 and r.std < 0.02


def test_probe_fails_on_a_planted_xor():
    X = _gaussian(600, 20, 2)
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).long()
    r = probe(X, y, n_splits=5, seed=0)
    assert r.mean <= 0.6, r.scores
    assert abs(r.chance - 0.5) < 0.1


def test_ridge_probe_and_errors():
    X = _gaussian(300, 6, 3)
    r = probe(X, X[:, 2] * 3 + 1, kind="ridge", alpha=1e-3, n_splits=3)
    assert r.mean > 0.999
    noise = probe(X, _gaussian(300, 1, 4)[:, 0], kind="ridge", n_splits=3)
    assert noise.mean < 0.1
    with pytest.raises(InterplabError, match="two classes"):
        probe(X, torch.zeros(300), kind="logistic")
    with pytest.raises(InterplabError, match="rows"):
        probe(X, torch.zeros(10))
    with pytest.raises(InterplabError, match="kind"):
        probe(X, X[:, 0], kind="lasso")


def test_unit_auc_matches_a_planted_detector():
    X = _gaussian(400, 3, 5)
    y = (X[:, 1] > 0.3).long()
    auc = unit_auc(X, y)
    assert auc[1].item() == 1.0
    assert abs(auc[0].item() - 0.5) < 0.1
    assert unit_auc(-X, y)[1].item() == 0.0


def test_probe_over_positions_reads_the_last_token_of_each_name():
    # sequences of varying name length padded with 0; the property is carried by the last name token
    m = Transformer(TransformerConfig(d_vocab=8, n_ctx=4, d_model=16, n_heads=2, d_mlp=32), seed=0)
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(1, 8, (200, 4), generator=g)
    last = torch.randint(1, 4, (200,), generator=g)
    y = (toks[torch.arange(200), last] >= 4).long()
    r = probe_sites(m, toks, y, ["hook_embed"], position=last, n_splits=3)["hook_embed"]
    wrong = probe_sites(m, toks, y, ["hook_embed"], position=0, n_splits=3)["hook_embed"]
    assert r.mean >= 0.99 and wrong.mean < 0.7
    assert gather_positions(torch.arange(6.0).reshape(1, 3, 2), [1]).tolist() == [[2.0, 3.0]]
    with pytest.raises(InterplabError, match="one position per input"):
        gather_positions(torch.zeros(2, 3, 1), [0, 1, 2])


def test_nonlinear_excess_is_exactly_zero_for_a_linear_unit_and_large_for_an_and():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randint(-5, 6, (7,), generator=g).double(), torch.randint(-5, 6, (9,), generator=g).double()
    linear = (2 * u[:, None] - 3 * v[None, :])[..., None]
    ex = nonlinear_excess_table(linear)
    assert torch.equal(ex, torch.zeros_like(ex))
    AND = torch.zeros(7, 9, 1, dtype=torch.float64)
    AND[2, 4] = 1.0
    ex = nonlinear_excess_table(AND)
    assert ex[2, 4, 0].item() == 1.0  # the AND's whole range
    assert ex.abs().max().item() == 1.0
    # the dataset form agrees with the table form for the same pair of features
    a_idx, b_idx = torch.meshgrid(torch.arange(7), torch.arange(9), indexing="ij")
    acts = torch.cat([linear, AND], -1).reshape(63, 2)
    d = nonlinear_excess(acts, a_idx.flatten() == 2, b_idx.flatten() == 4)
    assert abs(d[0].item()) < 1e-12 and abs(d[1].item() - 1.0) < 1e-12
    with pytest.raises(InterplabError, match="four groups"):
        nonlinear_excess(acts, torch.ones(63, dtype=torch.bool), b_idx.flatten() == 4)


def test_linearity_break_orders_additive_random_and_lookup_tables():
    g = torch.Generator().manual_seed(1)
    u, v = _gaussian(10, 8, 6), _gaussian(10, 8, 7)
    additive = u[:, None] + v[None]
    assert linearity_break(additive, 500, g)["ratio"] < 1e-6
    relu = torch.relu(additive)  # a random ReLU layer keeps much of the additive structure
    lookup = _gaussian(100, 8, 8).reshape(10, 10, 8)  # an arbitrary table: no structure left
    r_relu, r_lookup = linearity_break(relu, 500, g)["ratio"], linearity_break(lookup, 500, g)["ratio"]
    assert 0.05 < r_relu < r_lookup and r_lookup > 0.85


def test_ablation_effect_correlation():
    g = torch.Generator().manual_seed(2)
    shared = _gaussian(50, 1, 9).expand(50, 6) + 0.01 * torch.randn(50, 6, generator=g)
    assert ablation_effect_correlation(shared)["mean_offdiag"] > 0.99
    separate = _gaussian(50, 6, 10)
    assert ablation_effect_correlation(separate)["mean_abs_offdiag"] < 0.3


def test_cross_validated_regularisation_helps_with_few_examples_per_dimension():
    # 60 examples in 50 dimensions, the target on one axis plus noise: a fixed weak penalty overfits
    X = _gaussian(60, 50, 11)
    y = X[:, 0] + 0.5 * _gaussian(60, 1, 12)[:, 0]
    fixed = probe(X, y, kind="ridge", alpha=1e-3, n_splits=4)
    cv = probe(X, y, kind="ridge", alpha=[0.1, 1.0, 10.0, 100.0], n_splits=4)
    assert cv.mean > fixed.mean + 0.2 and cv.mean > 0.3
    small = _gaussian(200, 5, 13)
    labels = (small[:, 0] > 0).long()
    assert probe(small, labels, C=[0.01, 1.0, 100.0], n_splits=3).mean >= 0.95
