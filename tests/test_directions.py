import torch

from interplab.analysis.directions import (
    ThresholdRule, best_threshold, fit_threshold_rule, gradient_subspace, lift_rule, readout_basis,
)
from interplab.interventions.ablate import coordinates
from interplab.models import MLP, MLPConfig

G = torch.Generator().manual_seed(0)
X = torch.randn(3000, 5, generator=G, dtype=torch.float64)


def test_fit_threshold_rule_recovers_a_planted_and_and_or():
    a = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64) / 2**0.5
    b = torch.tensor([0.0, 0.0, 1.0, -1.0, 0.0], dtype=torch.float64) / 2**0.5
    y = (X @ a > 0.2) & (X @ b > -0.3)
    rule = fit_threshold_rule(X, y, seed=0)
    assert rule.agreement(X, y) > 0.99
    cos = (rule.directions @ torch.stack([a, b]).T).abs()
    assert max(cos[0, 0] + cos[1, 1], cos[0, 1] + cos[1, 0]) > 1.95
    y_or = (X @ a > 0.2) | (X @ b > -0.3)
    assert fit_threshold_rule(X, y_or, op="or", seed=0).agreement(X, y_or) > 0.99


def test_best_threshold_is_exact():
    v = torch.rand(500, generator=G, dtype=torch.float64)
    t, agree = best_threshold(v, v > 0.37)
    assert agree == 1.0 and abs(t - 0.37) < 0.02


def test_lift_rule_matches_rule_on_coordinates():
    comps = torch.linalg.qr(torch.randn(5, 2, generator=G, dtype=torch.float64)).Q.T
    mean = X.mean(0)
    z = (X - mean) @ comps.T
    rule = ThresholdRule(torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64), torch.tensor([0.1, -0.2],
                         dtype=torch.float64))
    assert torch.equal(lift_rule(rule, comps, mean).predict(X), rule.predict(z))


def test_readout_basis_coordinates_are_the_readouts():
    r = torch.randn(5, 2, generator=G, dtype=torch.float64)
    basis = readout_basis(r, X)
    c = coordinates(X, basis=basis)
    assert torch.allclose(c[:, :2], X @ r, atol=1e-8)
    assert torch.allclose(c @ basis.T, X, atol=1e-8)  # a full basis: nothing outside it


def test_gradient_subspace_finds_what_the_readout_reads():
    m = MLP(MLPConfig(d_in=5, d_hidden=(), d_out=2), seed=0)
    with torch.no_grad():
        m.W_U.zero_()
        m.W_U[1, 1] = 1.0
        m.W_U[3, 0] = -2.0
    basis, share = gradient_subspace(m, X.float(), "hook_input", k=1)
    assert abs(abs(float(basis[1, 0])) * 5**0.5 - 1) < 1e-6 and abs(float(share[0]) - 1) < 1e-9


def test_angle_search_in_a_plane_finds_an_exact_wedge():
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = torch.tensor([0.6, 0.8], dtype=torch.float64)
    b = torch.tensor([0.8, -0.6], dtype=torch.float64)
    y = (z @ a > 0.1) & (z @ b > -0.2)
    rule = fit_threshold_rule(z, y, restarts=1, steps=20, seed=0)  # a poor start; the angle search fixes it
    assert rule.agreement(z, y) > 0.995
