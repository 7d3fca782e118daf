"""Superposition metrics, the geometry classifier, plateaus, and the sparse-features objective."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from interplab.analysis import superposition as sp
from interplab.errors import InterplabError
from interplab.models import TMSConfig, ToyModelOfSuperposition
from interplab.tasks.superposition import SparseFeatures, from_description
from interplab.train import TrainConfig, train


def polygon(k: int, radius: float = 1.0, phase: float = 0.3) -> torch.Tensor:
    a = phase + torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return radius * torch.stack([a.cos(), a.sin()])


def random_rotation(m: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(m, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def loop_dimensionality(W: torch.Tensor) -> list[float]:
    """D_i written out with explicit sums, to check the vectorised version."""
    n = W.shape[1]
    out = []
    for i in range(n):
        wi = W[:, i]
        norm = wi.norm().item()
        if norm == 0:
            out.append(0.0)
            continue
        denom = sum((wi @ W[:, j]).item() ** 2 / norm**2 for j in range(n))
        out.append(norm**2 / denom)
    return out


# -- formulas ----------------------------------------------------------------------------------
def test_metrics_match_explicit_sums_on_random_weights():
    W = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    W[1, :, 2] = 0  # a zero column
    D = sp.feature_dimensionality(W)
    for inst in range(3):
        w = W[inst]
        assert D[inst].tolist() == pytest.approx(loop_dimensionality(w), rel=1e-9)
        norms = [w[:, i].norm().item() for i in range(7)]
        assert sp.feature_norms(w).tolist() == pytest.approx(norms)
        interf = [sum((w[:, i] @ w[:, j]).item() ** 2 / norms[i] ** 2 for j in range(7) if j != i)
                  if norms[i] > 0 else 0.0 for i in range(7)]
        assert sp.interference(w).tolist() == pytest.approx(interf, rel=1e-9, abs=1e-12)
        assert sp.dimensions_per_feature(w).item() == pytest.approx(4 / (w**2).sum().item())
    assert D[1, 2] == 0


@pytest.mark.parametrize("k", [3, 4, 5, 6, 7])
def test_regular_polygon_dimensionality_is_two_over_k(k):
    W = random_rotation(4) @ torch.cat([polygon(k, 1.3), torch.zeros(2, k, dtype=torch.float64)])
    assert sp.feature_dimensionality(W).tolist() == pytest.approx([2 / k] * k)
    assert sp.dimensions_per_feature(W).item() == pytest.approx(4 / (k * 1.3**2))


def test_tetrahedron_and_antipodal_dimensionality():
    tet = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64).T
    assert sp.feature_dimensionality(tet).tolist() == pytest.approx([0.75] * 4)
    pair = torch.tensor([[2.0, -1.0]], dtype=torch.float64)  # unequal norms: D still sums to 1
    D = sp.feature_dimensionality(pair)
    assert D.tolist() == pytest.approx([4 / 5, 1 / 5])
    assert D.sum().item() == pytest.approx(1.0)


def test_datapoint_dimensionality_uses_hidden_vectors():
    W = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    X = torch.rand(9, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    H = sp.hidden_vectors(W, X)
    assert torch.allclose(H, W @ X.T)
    assert sp.datapoint_dimensionality(W, X).tolist() == pytest.approx(loop_dimensionality(W @ X.T))
    # one-hot data points are the features themselves
    assert torch.allclose(sp.datapoint_dimensionality(W, torch.eye(6, dtype=torch.float64)),
                          sp.feature_dimensionality(W))
    # the model's [T, instances, n] layout
    W3 = torch.stack([W, 2 * W])
    X3 = torch.stack([X, X], dim=1)
    H3 = sp.hidden_vectors(W3, X3)
    assert torch.allclose(H3[0], H) and torch.allclose(H3[1], 2 * H)
    with pytest.raises(InterplabError):
        sp.hidden_vectors(W, X[:, :5])


# -- classifier ----------------------------------------------------------------------------------
def pad(W: torch.Tensor, absent: int, m: int | None = None) -> torch.Tensor:
    """Append ``absent`` near-zero features and embed in ``m`` dims with a rotation."""
    m = m or W.shape[0]
    W = torch.cat([W, torch.zeros(m - W.shape[0], W.shape[1], dtype=W.dtype)]) if m > W.shape[0] else W
    small = 0.05 * torch.randn(m, absent, generator=torch.Generator().manual_seed(4), dtype=W.dtype)
    return random_rotation(m, 5) @ torch.cat([W, small], dim=1)


@pytest.mark.parametrize(
    "W, expected",
    [
        (pad(torch.eye(2, dtype=torch.float64), 3), "2 orthogonal, 3 absent"),
        (pad(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], dtype=torch.float64), 1),
         "2 antipodal pairs, 1 absent"),
        (pad(polygon(4), 1), "2 antipodal pairs, 1 absent"),  # a square is two antipodal pairs
        (pad(torch.tensor([[1.0, -0.9, 0.0], [0.0, 0.0, 1.1]], dtype=torch.float64), 2), "1 orthogonal, 1 antipodal pair, 2 absent"),
        (polygon(5), "pentagon"),
        (pad(polygon(3, 1.2), 2), "triangle, 2 absent"),
        (polygon(6), "hexagon"),
        (polygon(7), "heptagon"),
        (polygon(9), "regular 9-gon"),
        (pad(torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64).T / 3**0.5, 1, m=3),
         "tetrahedron, 1 absent"),
        (pad(torch.tensor([[1.0, 0.8], [0.0, 0.6]], dtype=torch.float64), 3), "2 irregular, 3 absent"),
        (torch.zeros(2, 4, dtype=torch.float64), "4 absent"),
        (pad(torch.cat([torch.cat([polygon(3), torch.zeros(2, 3, dtype=torch.float64)]),
                        torch.cat([torch.zeros(2, 3, dtype=torch.float64), polygon(3)])], dim=1), 0),
         "2 triangles"),
    ],
)
def test_classify_geometry_on_built_matrices(W, expected):
    assert sp.classify_geometry(W) == expected
    assert sp.classify_geometry(3.0 * W) == expected or "absent" in expected  # scale changes absence only


def test_classifier_tolerates_small_noise_and_flags_distortion():
    P = polygon(5)
    noisy = P + 0.03 * torch.randn(2, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert sp.classify_geometry(noisy) == "pentagon"
    squashed = P * torch.tensor([[1.0], [0.4]], dtype=torch.float64)  # an ellipse, not a regular pentagon
    assert sp.classify_geometry(squashed) != "pentagon"
    assert sp.classify_geometry(torch.stack([P, noisy])) == ["pentagon", "pentagon"]


def test_every_classifier_string_uses_the_vocabulary():
    templates = [t.replace("{k}", r"\d+").replace("{c}", r"\d+") for t in sp.GEOMETRY_VOCABULARY]
    import re

    pattern = re.compile("^(" + "|".join(templates) + ")$")
    g = torch.Generator().manual_seed(7)
    for _ in range(40):
        W = torch.randn(2, 5, generator=g) * torch.rand(1, 5, generator=g) * 2
        for part in sp.classify_geometry(W).split(", "):
            assert pattern.match(part), part


@pytest.mark.parametrize(
    "W, expected",
    [
        ([[1.0, 0.3]], "absent"),
        ([[0.1, 1.0]], "dedicated"),
        ([[1.0, -0.8]], "antipodal"),
        ([[1.0, 0.9]], "other"),
        ([[1.0, 0.0], [0.0, 1.0]], "dedicated"),  # m=2: orthogonal is a dimension to itself
    ],
)
def test_classify_phase_branches(W, expected):
    assert sp.classify_phase(torch.tensor(W)) == expected


# -- plateaus ----------------------------------------------------------------------------------
def staircase(x: torch.Tensor) -> torch.Tensor:
    """1 until x=2, falls to 1/2, flat on [3, 6], then falls as a power law."""
    y = torch.where(x <= 2, 1.0, 1 / x * 2)
    y = torch.where((x >= 3) & (x <= 6), 0.5 + 0.0 * x, y)
    return torch.where(x > 6, 0.5 * (x / 6) ** -0.7, y)


def test_find_plateaus_on_a_staircase_and_not_on_a_power_law():
    x = torch.logspace(0, 1.5, 30, dtype=torch.float64)
    y = staircase(x) * (1 + 0.005 * torch.randn(30, generator=torch.Generator().manual_seed(8), dtype=torch.float64))
    found = sp.find_plateaus(x, y)
    assert len(found) == 2
    assert found[0] == pytest.approx(1.0, abs=0.01) and found[1] == pytest.approx(0.5, abs=0.01)
    assert sp.find_plateaus(x, x**-0.7) == []
    assert sp.find_plateaus(x.flip(0), y.flip(0)) == found  # order of the points does not matter


# -- objective -----------------------------------------------------------------------------------
def test_sampling_density_and_values():
    obj = SparseFeatures(3, 50, sparsity=[0.0, 0.6, 0.95])
    x = obj.sample(torch.Generator().manual_seed(0), 4000)
    density = (x > 0).float().mean(dim=(0, 2))
    assert density.tolist() == pytest.approx([1.0, 0.4, 0.05], abs=0.01)
    present = x[:, 1][x[:, 1] > 0]
    assert present.mean().item() == pytest.approx(0.5, abs=0.01) and present.max() < 1


def test_correlated_and_anticorrelated_sets():
    obj = SparseFeatures(2, 6, sparsity=[0.5, 0.8], correlated=[[0, 1, 2]], anticorrelated=[[3, 4]])
    x = obj.sample(torch.Generator().manual_seed(1), 20000)
    on = x > 0
    assert bool((on[..., 0] == on[..., 1]).all() and (on[..., 1] == on[..., 2]).all())
    assert not bool((on[..., 3] & on[..., 4]).any())
    for k in (0, 3, 4, 5):  # every feature keeps density 1 - S
        assert on[..., k].float().mean(0).tolist() == pytest.approx([0.5, 0.2], abs=0.015)
    with pytest.raises(InterplabError, match="density"):
        SparseFeatures(1, 4, sparsity=0.2, anticorrelated=[[0, 1, 2]])
    with pytest.raises(InterplabError, match="disjoint"):
        SparseFeatures(1, 4, correlated=[[0, 1]], anticorrelated=[[1, 2]])


def test_loss_is_importance_weighted_and_summed_over_instances():
    obj = SparseFeatures(2, 3, sparsity=[0.0, 0.5], importance=[[1.0, 0.5, 0.25], [2.0, 2.0, 2.0]])
    model = ToyModelOfSuperposition(TMSConfig(2, 3, 2), seed=0)
    x = obj.sample(torch.Generator().manual_seed(2), 64)
    out = model(x)
    manual = sum(((obj.importance[i] * (x[:, i] - out[:, i]) ** 2).sum(1) / 3).mean() for i in range(2))
    assert obj.loss(model, x).item() == pytest.approx(manual.item(), rel=1e-5)
    # instances are independent: the gradient of instance 0's weights ignores instance 1's data
    x2 = x.clone()
    x2[:, 1] = torch.rand(64, 3)
    g1 = torch.autograd.grad(obj.loss(model, x), model.W)[0][0]
    g2 = torch.autograd.grad(obj.loss(model, x2), model.W)[0][0]
    assert torch.allclose(g1, g2)


def test_finite_datasets():
    obj = SparseFeatures(3, 8, sparsity=0.7, n_samples=[2, 5, 40], normalize=True, seed=3)
    assert [len(obj.dataset(i)) for i in range(3)] == [2, 5, 40]
    assert torch.allclose(obj.dataset(2).norm(dim=-1), torch.ones(40))
    batch = obj.finite_batch(torch.Generator().manual_seed(0), 500)
    for i in range(3):  # every batch row is one of the instance's own points
        ds = obj.dataset(i)
        assert bool((batch[:, i, None, :] == ds[None]).all(-1).any(-1).all())
    assert len({tuple(r.tolist()) for r in batch[:, 0]}) == 2
    model = ToyModelOfSuperposition(TMSConfig(3, 8, 2), seed=0)
    ev = obj.evaluate(model)
    assert set(ev) == {"train_loss", "test_loss"}
    assert ev["train_loss"] == pytest.approx(obj.dataset_losses(model).sum().item())
    again = from_description(obj.describe())
    assert torch.equal(again.data, obj.data) and torch.equal(again.eval_x, obj.eval_x)


def test_bad_settings_are_one_sentence_errors():
    for kwargs, match in [({"sparsity": 1.0}, "sparsity"), ({"sparsity": [0.1, 0.2, 0.3]}, "one per instance"),
                          ({"importance": [1.0, 2.0]}, "importance"), ({"n_samples": 0}, "n_samples")]:
        with pytest.raises(InterplabError, match=match):
            SparseFeatures(2, 4, **kwargs)


# -- trained models ----------------------------------------------------------------------------------
def train_five_in_two(sparsity: list[float], restarts: int, steps: int, seed: int = 0, relu: bool = True):
    S = [s for s in sparsity for _ in range(restarts)]
    obj = SparseFeatures(len(S), 5, sparsity=S, importance=[0.9**i for i in range(5)], steps_per_epoch=100, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(len(S), 5, 2, relu_output=relu), seed=seed)
    cfg = TrainConfig(epochs=steps // 100, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), batch_size=512,
                      schedule="cosine", seed=seed, log_every=1000)
    train(model, obj, cfg, quiet=True)
    best = obj.best_instances(model, restarts)
    return model.W.detach()[best]


def test_trained_five_features_in_two_dimensions():
    W = train_five_in_two([0.0, 0.9], restarts=4, steps=1500)
    dense, sparse = sp.classify_geometry(W)
    assert dense == "2 orthogonal, 3 absent"
    assert sparse == "pentagon"
    norms = sp.feature_norms(W[0])
    assert norms[:2].min() > 0.9 and norms[2:].max() < 0.5  # the two most important features are kept
    assert sp.feature_dimensionality(W[1]).tolist() == pytest.approx([0.4] * 5, abs=0.1)


def test_trained_linear_model_does_not_superpose():
    (W,) = train_five_in_two([0.9], restarts=2, steps=1000, relu=False)
    assert sp.classify_geometry(W) == "2 orthogonal, 3 absent"
    assert sp.dimensions_per_feature(W).item() == pytest.approx(1.0, abs=0.05)


def test_trained_phase_diagram_corners():
    # cells: (density, importance of feature 2) with 3 restarts each
    cells = list(itertools.product([1.0, 0.03], [0.2, 5.0]))
    S = [1 - d for d, _ in cells for _ in range(3)]
    imp = [[1.0, r] for _, r in cells for _ in range(3)]
    obj = SparseFeatures(len(S), 2, sparsity=S, importance=imp, eval_batch=4096, steps_per_epoch=100)
    model = ToyModelOfSuperposition(TMSConfig(len(S), 2, 1), seed=0)
    cfg = TrainConfig(epochs=8, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), batch_size=256,
                      schedule="cosine", seed=0, log_every=1000)
    train(model, obj, cfg, quiet=True)
    phases = dict(zip(cells, sp.classify_phase(model.W.detach()[obj.best_instances(model, 3)])))
    assert phases[(1.0, 0.2)] == "absent"  # dense, unimportant: dropped
    assert phases[(1.0, 5.0)] == "dedicated"  # dense, important: takes the dimension
    assert phases[(0.03, 0.2)] == "antipodal" and phases[(0.03, 5.0)] == "antipodal"  # sparse: shared


def test_many_scattered_vectors_are_not_a_regular_polygon():
    g = torch.Generator().manual_seed(9)
    angles = torch.rand(300, generator=g, dtype=torch.float64) * 2 * math.pi
    W = torch.stack([angles.cos(), angles.sin()]) * (0.6 + torch.rand(300, generator=g, dtype=torch.float64))
    assert sp.classify_geometry(W) == "300 irregular"
    assert sp.classify_geometry(polygon(12)) == "regular 12-gon"
