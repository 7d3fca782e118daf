import pytest
import torch

from interplab.errors import InterplabError
from interplab.interventions.scrub import Group, Hypothesis, scrub, scrub_many, scrubbed_values
from interplab.models import MLP, MLPConfig


def identity_model(d: int = 3) -> MLP:
    m = MLP(MLPConfig(d_in=d, d_hidden=(), d_out=d), seed=0)
    with torch.no_grad():
        m.W_U.copy_(torch.eye(d))
        m.b_U.zero_()
    return m


def and_readout(out: torch.Tensor) -> torch.Tensor:
    return ((out[:, 0] > 0) & (out[:, 1] > 0)).long()


X = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
LABELS = and_readout(X)


def test_true_hypothesis_keeps_every_label_false_one_does_not():
    side = lambda i: lambda c: (c[:, i] > 0).long()  # noqa: E731
    true_h = Hypothesis("hook_input", (Group([0], "same", key=side(0)), Group([1], "same", key=side(1))), name="2")
    r = scrub(identity_model(), true_h, X, LABELS, n_draws=3, readout=and_readout)
    assert r.agree == 1.0 and r.acc == 1.0 and r.clean_acc == 1.0
    wrong = Hypothesis("hook_input", (Group([0], "same", key=side(0)),), name="drop 1")
    r = scrub(identity_model(), wrong, X, LABELS, n_draws=3, readout=and_readout)
    assert 0.5 < r.agree < 0.9 and r.agree_ci[0] <= r.agree <= r.agree_ci[1]


def test_free_where_with_recomputed_sides_is_exact_while_stale_sides_are_not():
    side = lambda i: lambda c: (c[:, i] > 0).long()  # noqa: E731
    below = lambda i: lambda c: c[:, i] <= 0  # noqa: E731
    recomputed = Hypothesis("hook_input", (
        Group([0], "same", key=side(0), free_where=below(1)),
        Group([1], "same", key=side(1), free_where=below(0)),
    ))
    r = scrub(identity_model(), recomputed, X, LABELS, n_draws=3, readout=and_readout)
    assert r.agree == 1.0
    stale = Hypothesis("hook_input", (  # sides taken from the clean input, not recomputed
        Group([0], "same", key=side(0), free_where=X[:, 1] <= 0),
        Group([1], "same", key=side(1), free_where=X[:, 0] <= 0),
    ))
    assert scrub(identity_model(), stale, X, LABELS, n_draws=3, readout=and_readout).agree < 0.97


def test_basis_groups_and_rest():
    rot = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1))).Q
    y = X @ rot.T  # coordinates of y in the basis rot are X
    h = Hypothesis("hook_input", (Group([0, 1], "keep"),), basis=rot)
    new, _ = scrubbed_values(h, y, torch.Generator().manual_seed(0))
    assert torch.allclose((new @ rot)[:, :2], X[:, :2], atol=1e-5)
    assert not torch.allclose((new @ rot)[:, 2], X[:, 2], atol=1e-3)
    h_keep = Hypothesis("hook_input", (), basis=rot[:, :2], rest="keep")
    new, _ = scrubbed_values(h_keep, y, torch.Generator().manual_seed(0))
    assert torch.allclose(new, y, atol=1e-5)


def test_same_seed_same_numbers_and_score_tolerance():
    score = X[:, 0]
    h = Hypothesis("hook_input", (Group([0], "same", score=score, tol=0.05), Group([1, 2], "keep")))
    a = scrub(identity_model(), h, X, LABELS, n_draws=2, seed=3, readout=and_readout)
    b = scrub(identity_model(), h, X, LABELS, n_draws=2, seed=3, readout=and_readout)
    assert a.agree_draws == b.agree_draws
    assert a.agree > 0.97  # only inputs within 0.05 of the threshold can flip


def test_bad_hypotheses_are_refused():
    with pytest.raises(InterplabError, match="needs a key or a score"):
        Group([0], "same")
    with pytest.raises(InterplabError, match="two groups"):
        Hypothesis("hook_input", (Group([0], "keep"), Group([0, 1], "free")))
    with pytest.raises(InterplabError, match="Unknown activation site"):
        scrub(identity_model(), Hypothesis("nope"), X)


def test_keep_with_free_where_and_scrub_many_matches_scrub():
    side0 = lambda c: (c[:, 0] > 0).long()  # noqa: E731
    h3a = Hypothesis("hook_input", (Group([0], "keep", free_where=lambda c: c[:, 1] <= 0), Group([1], "keep")),
                     name="1_3a")
    model = identity_model()
    many = scrub_many(model, [Hypothesis("hook_input", (Group([0], "same", key=side0),), name="x"), h3a], X, LABELS,
                      n_draws=2, readout=and_readout)
    assert many[1].agree == 1.0  # dir 0 only matters where dir 1 is above threshold
    single = scrub(model, h3a, X, LABELS, n_draws=2, readout=and_readout)
    assert single.agree_draws == many[1].agree_draws
