import pytest
import torch

from interplab.errors import InterplabError
from interplab.instrument import site_values
from interplab.interventions.ablate import (
    ablate, ablated_coordinates, coordinates, replace_coordinates, resample_indices,
)
from interplab.models import MLP, MLPConfig, Transformer, TransformerConfig

G = lambda s=0: torch.Generator().manual_seed(s)  # noqa: E731


def test_basis_coordinates_roundtrip_and_complement_kept():
    x = torch.randn(10, 6, generator=G(0), dtype=torch.float64)
    basis = torch.randn(6, 3, generator=G(1), dtype=torch.float64)  # not orthonormal
    new = torch.randn(10, 3, generator=G(2), dtype=torch.float64)
    y = replace_coordinates(x, new, basis=basis)
    assert torch.allclose(coordinates(y, basis=basis), new, atol=1e-10)
    proj = basis @ torch.linalg.pinv(basis)
    assert torch.allclose((y - x) @ (torch.eye(6, dtype=torch.float64) - proj).T, torch.zeros(10, 6, dtype=torch.float64), atol=1e-10)


def test_zero_and_mean_on_units_match_manual_forward():
    model = MLP(MLPConfig(d_in=3, d_hidden=[5], d_out=2), seed=0)
    x = torch.randn(20, 3, generator=G(0))
    ref = site_values(model, x, "layers.0.hook_post")
    for method, value in (("zero", torch.zeros(2)), ("mean", ref[:, [1, 3]].mean(0)), ("min", ref[:, [1, 3]].amin(0))):
        out = ablate(model, x, "layers.0.hook_post", method, units=[1, 3], reference=ref)
        h = ref.clone()
        h[:, [1, 3]] = value
        assert torch.allclose(out, h @ model.W_U + model.b_U, atol=1e-5), method


def test_resample_from_self_is_identity_and_from_others_changes_output():
    cfg = TransformerConfig(d_vocab=7, n_ctx=3, d_model=16, n_heads=2, d_mlp=32)
    model = Transformer(cfg, seed=0)
    toks = torch.randint(0, 7, (12, 3), generator=G(0))
    clean = model(toks, positions=[-1])
    same = ablate(model, toks, "blocks.0.hook_resid_mid", "resample", sources=torch.arange(12), positions=[-1])
    assert torch.allclose(clean, same)
    other = ablate(model, toks, "blocks.0.hook_resid_mid", "resample", sources=torch.roll(torch.arange(12), 1),
                   positions=[-1])
    assert torch.allclose(other, torch.roll(clean, 1, 0), atol=1e-5)


def test_subspace_zero_ablation_removes_projection_only():
    model = MLP(MLPConfig(d_in=4, d_hidden=[6], d_out=2), seed=1)
    x = torch.randn(8, 4, generator=G(3))
    basis = torch.linalg.qr(torch.randn(6, 2, generator=G(4))).Q
    h = site_values(model, x, "layers.0.hook_post")
    out = ablate(model, x, "layers.0.hook_post", "zero", basis=basis)
    h2 = h - h @ basis @ basis.T
    assert torch.allclose(out, h2 @ model.W_U + model.b_U, atol=1e-5)


def test_resample_indices_classes_tolerance_and_unmatched():
    g = G(0)
    keys = torch.tensor([0, 1, 0, 1, 0, 1])
    ref_keys = torch.tensor([1, 1, 1, 1])
    src = resample_indices(6, g, keys=keys, ref_keys=ref_keys)
    assert (src[keys == 0] == -1).all() and (src[keys == 1] >= 0).all()
    scores = torch.rand(500, generator=g)
    src = resample_indices(500, g, keys=(scores > 0.5).long(), scores=scores, tol=0.02)
    assert ((scores[src] - scores).abs() <= 0.02).all()
    assert ((scores[src] > 0.5) == (scores > 0.5)).all()
    assert (src != torch.arange(500)).float().mean() > 0.5  # it really draws other inputs
    counts = torch.bincount(resample_indices(4000, g, keys=torch.zeros(4000, dtype=torch.long)), minlength=4000)
    assert counts.max() < 12  # roughly uniform over the class


def test_errors_are_one_sentence():
    with pytest.raises(InterplabError, match="ablation method"):
        ablated_coordinates(torch.zeros(2, 3), "median")
    with pytest.raises(InterplabError, match="needs reference"):
        ablated_coordinates(torch.zeros(2, 3), "mean")
    model = MLP(MLPConfig(d_in=2, d_hidden=[3], d_out=2))
    with pytest.raises(InterplabError, match="Unknown activation site"):
        ablate(model, torch.zeros(1, 2), "nope")
