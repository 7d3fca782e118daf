"""Unusual inputs (issue 17): readout positions in path patching and AtP*, empty inputs, degenerate data.

Each right value is computed independently of the function under test: by an explicit hooked
forward pass, by the closed form of a direct path, or by hand.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from interplab.errors import InterplabError
from interplab.instrument import Site, cache, predict, site_values
from interplab.interventions.ablate import ablate
from interplab.interventions.attribution import agreement, atp, atp_star
from interplab.interventions.patching import activation_patching, path_patching
from interplab.models import (MLP, ConvNet, ConvNetConfig, MLPConfig, TMSConfig, ToyModelOfSuperposition, Transformer,
                              TransformerConfig)

CLEAN, CORRUPT = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 5, 3]])


@pytest.fixture(scope="module")
def attn_only() -> Transformer:
    """The model of the issue: 2 attention-only layers, d_vocab 7, n_ctx 4, d_model 16, 2 heads, no biases."""
    return Transformer(TransformerConfig(d_vocab=7, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=None,
                                         bias=False), seed=1)


@pytest.fixture(scope="module")
def with_mlp() -> Transformer:
    return Transformer(TransformerConfig(d_vocab=7, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=32), seed=2)


def _row_metric(row: int):
    return lambda logits: logits[:, row, 3].mean()


def _patched_head_effect(m: Transformer, layer: int, head: int) -> float:
    """Restore head (layer, head)'s clean z in a full corrupted pass; the metric at position 3."""
    _, clean = m.run_with_cache(CLEAN)
    z_clean = clean[f"blocks.{layer}.attn.hook_z"]

    def put(z, hook):
        z = z.clone()
        z[:, :, head] = z_clean[:, :, head]
        return z

    patched = m.run_with_hooks(CORRUPT, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", put)])
    return float((patched[0, 3, 3] - m(CORRUPT)[0, 3, 3]).detach())


# readout positions (as given) and the row of the output that holds position 3
POSITION_FORMS = [([-1], 0), (-1, 0), (3, 0), ((3,), 0), (torch.tensor([3]), 0), (torch.tensor(3), 0),
                  ([2, 3], 1), ([0, 3], 1), ([3, 0], 0), ([0, -1], 1), ([3, 3], 1), (range(4), 3)]


@pytest.mark.parametrize("positions,row", POSITION_FORMS)
def test_path_patching_last_layer_sender_with_readout_positions(attn_only, positions, row):
    # a last-layer head reaches the logits only directly: path patching = restoring its z
    want = _patched_head_effect(attn_only, 1, 0)
    assert want == pytest.approx(0.0236, abs=1e-3)  # the value quoted in the issue
    got = path_patching(attn_only, CLEAN, CORRUPT, _row_metric(row), (1, 0), ["logits"],
                        model_kwargs={"positions": positions})
    assert float(got) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("positions,row", [([-1], 0), ([0, 3], 1), (3, 0)])
def test_path_patching_last_layer_mlp_sender_with_readout_positions(with_mlp, positions, row):
    _, clean = with_mlp.run_with_cache(CLEAN)
    put = lambda act, hook: clean["blocks.1.hook_mlp_out"]  # noqa: E731
    want = float(with_mlp.run_with_hooks(CORRUPT, fwd_hooks=[("blocks.1.hook_mlp_out", put)])[0, 3, 3].detach()
                 - with_mlp(CORRUPT)[0, 3, 3].detach())
    got = path_patching(with_mlp, CLEAN, CORRUPT, _row_metric(row), (1, None), ["logits"],
                        model_kwargs={"positions": positions})
    assert float(got) == pytest.approx(want, abs=1e-5)
    assert abs(want) > 1e-3


@pytest.mark.parametrize("positions,row", [(None, 3), ([-1], 0), ([0, 3], 1), ([3, 0], 0)])
def test_path_patching_first_layer_sender_direct_path_closed_form(attn_only, positions, row):
    # the direct path of head (0, 1) into the logits: its (clean - corrupted) output times W_U
    m = attn_only
    _, c = m.run_with_cache(CLEAN)
    _, x = m.run_with_cache(CORRUPT)
    delta = (c["blocks.0.attn.hook_z"][0, 3, 1] - x["blocks.0.attn.hook_z"][0, 3, 1]) @ m.blocks[0].attn.W_O[1]
    want = float((delta @ m.W_U[:, 3]).detach())
    kw = {} if positions is None else {"positions": positions}
    got = path_patching(m, CLEAN, CORRUPT, _row_metric(row), (0, 1), ["logits"], model_kwargs=kw)
    assert float(got) == pytest.approx(want, abs=1e-5)


ZERO_FORMS = [0, [0], (0,), torch.tensor(0), torch.tensor([0]), -4, [-4], np.int64(0)]


@pytest.mark.parametrize("positions", ZERO_FORMS)
def test_atp_star_every_form_of_position_zero(attn_only, positions):
    # the metric reads the one readout row, which is position 0: the same as a full pass read at 0
    full_metric, kw = _row_metric(0), {"positions": positions}
    got = atp_star(attn_only, CLEAN, CORRUPT, full_metric, ["z", "q", "k"], grad_drop=False, model_kwargs=kw)
    want = atp_star(attn_only, CLEAN, CORRUPT, full_metric, ["z", "q", "k"], grad_drop=False)
    for kind in want:
        torch.testing.assert_close(got[kind], want[kind], atol=1e-6, rtol=0)
    # per position, readout positions turn the residual estimate linear: AtP on the full pass
    got = atp_star(attn_only, CLEAN, CORRUPT, full_metric, "resid_pre", per_position=True, grad_drop=False,
                   model_kwargs=kw)
    torch.testing.assert_close(got, atp(attn_only, CLEAN, CORRUPT, full_metric, "resid_pre", per_position=True),
                               atol=1e-6, rtol=0)


def test_atp_linear_estimate_by_hand(attn_only):
    # AtP on resid_pre at layer 1, position 2: (clean - corrupted) . gradient at the corrupted input
    m = attn_only
    _, c = m.run_with_cache(CLEAN)
    x = m.run_with_cache(CORRUPT)[1]["blocks.1.hook_resid_pre"].detach().requires_grad_(True)
    out = m.run_with_hooks(CORRUPT, fwd_hooks=[("blocks.1.hook_resid_pre", lambda a, hook: x)], positions=-1)
    (g,) = torch.autograd.grad(out[0, 0, 3], x)
    want = float(((c["blocks.1.hook_resid_pre"] - x.detach()) * g)[0, 2].sum())
    got = atp(m, CLEAN, CORRUPT, _row_metric(0), "resid_pre", per_position=True, model_kwargs={"positions": 3})
    assert float(got[1, 2]) == pytest.approx(want, abs=1e-6)


# -- empty inputs --------------------------------------------------------------------------

def _models():
    return {
        "Transformer": (Transformer(TransformerConfig(d_vocab=5, n_ctx=4, d_model=8, n_heads=2, d_mlp=16)),
                        torch.zeros(0, 4, dtype=torch.long)),
        "MLP": (MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2)), torch.zeros(0, 3)),
        "ConvNet": (ConvNet(ConvNetConfig()), torch.zeros(0, 28, 28)),
        "TMS": (ToyModelOfSuperposition(TMSConfig(n_features=5, n_hidden=2, n_instances=2)), torch.zeros(0, 2, 5)),
    }


@pytest.mark.parametrize("name", ["Transformer", "MLP", "ConvNet", "TMS"])
def test_empty_batch_one_sentence_everywhere(name):
    model, empty = _models()[name]
    site = next(n for n in model.hook_dict if n != "hook_input" and "hook_embed" not in n)
    calls = {
        "forward": lambda: model(empty),
        "cache": lambda: cache(model, empty, names=site),
        "site_values": lambda: site_values(model, empty, site),
        "predict": lambda: predict(model, empty),
        "ablate": lambda: ablate(model, empty, site, "zero"),
    }
    for what, call in calls.items():
        with pytest.raises(InterplabError, match="empty"):
            call()


def test_transformer_zero_length_and_empty_patching():
    m = Transformer(TransformerConfig(d_vocab=5, n_ctx=4, d_model=8, n_layers=2, n_heads=2, d_mlp=None))
    none = torch.zeros(1, 0, dtype=torch.long)
    with pytest.raises(InterplabError, match="empty"):
        m(none)
    with pytest.raises(InterplabError, match="empty"):
        m(none, positions=[-1])
    metric = _row_metric(-1)
    with pytest.raises(InterplabError, match="empty"):
        activation_patching(m, none, none, metric, "z")
    with pytest.raises(InterplabError, match="empty"):
        path_patching(m, none, none, metric, (0, 0), ["logits"])
    with pytest.raises(InterplabError, match="empty"):
        atp(m, none[:0], none[:0], metric, "z")


def test_empty_reference_and_bad_units_are_sentences():
    m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2))
    x = torch.ones(2, 3)
    for method in ("mean", "min", "resample"):
        with pytest.raises(InterplabError, match="reference"):
            ablate(m, x, "layers.0.hook_post", method, reference=torch.zeros(0, 4))
    with pytest.raises(InterplabError, match="integers"):
        ablate(m, x, "layers.0.hook_post", "zero", units=[0.5])
    with pytest.raises(InterplabError, match="out of range"):
        Site("layers.0.hook_post", position=5).read(torch.zeros(2, 3, 4))


def test_readout_position_forms_rejected_with_one_sentence():
    m = Transformer(TransformerConfig(d_vocab=5, n_ctx=4, d_model=8, n_heads=2, d_mlp=None))
    x = torch.tensor([[0, 1, 2, 3]])
    for bad in ([], [4], [-5], [1.5], [[0, 1]], "0", True, 0.0, [True]):
        with pytest.raises(InterplabError):
            m(x, positions=bad)
    with pytest.raises(InterplabError, match="integers"):
        m(x.float())


# -- degenerate data: a documented value or one sentence, never NaN --------------------------

@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_agreement_on_constant_effects(no_warnings):
    zeros, ramp = torch.zeros(2, 3), torch.arange(6.0).reshape(2, 3)
    assert agreement(zeros, zeros)["spearman"] == 1.0
    assert agreement(zeros, ramp)["spearman"] == 0.0
    assert agreement(ramp, torch.full((2, 3), 2.0))["spearman"] == 0.0
    assert agreement(ramp, -ramp)["spearman"] == pytest.approx(1.0)  # magnitudes are compared
    with pytest.raises(InterplabError):
        agreement(torch.zeros(0), torch.zeros(0))


def test_sae_metrics_on_degenerate_rows(no_warnings):
    from interplab.sae.metrics import feature_density, l0, mse, variance_explained

    const = torch.ones(5, 3)
    with pytest.raises(InterplabError, match="no variance"):
        variance_explained(const, const * 0.5)
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # variance 2 (about the mean (1, 1)), error 0.5
    assert variance_explained(x, x + torch.tensor([[0.5, 0.0], [-0.5, 0.0]])) == pytest.approx(1 - 0.5 / 2)
    for f in (l0, feature_density):
        with pytest.raises(InterplabError, match="at least one row"):
            f(torch.zeros(0, 3))
    with pytest.raises(InterplabError, match="at least one row"):
        mse(torch.zeros(0, 3), torch.zeros(0, 3))


def test_analysis_on_degenerate_data(no_warnings):
    from interplab.analysis.arms import fit_arms
    from interplab.analysis.grouping import group_units
    from interplab.analysis.pca import pca
    from interplab.analysis.rules import fit_score_rule
    from interplab.analysis.superposition import dimensions_per_feature, feature_dimensionality

    with pytest.raises(InterplabError, match="no variance"):
        pca(torch.ones(4, 3))
    assert float(dimensions_per_feature(torch.zeros(2, 3))) == 0.0
    W = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert dimensions_per_feature(torch.stack([W, torch.zeros(2, 2)])).tolist() == [2.0, 0.0]
    assert feature_dimensionality(torch.zeros(2, 3)).tolist() == [0.0, 0.0, 0.0]
    # constant scores: the majority label everywhere, agreement = its share
    kind, lo, hi, agree = fit_score_rule(np.full(5, 3.0), np.array([1, 0, 1, 1, 0]))
    assert (kind, hi, agree) == ("threshold", None, 0.6) and lo < 3.0
    kind, lo, hi, agree = fit_score_rule(np.arange(4.0), np.zeros(4, dtype=int))
    assert (kind, lo, agree) == ("threshold", None, 1.0) and hi < 0.0
    with pytest.raises(InterplabError, match="distinct"):
        fit_arms(torch.zeros(12, 2))
    with pytest.raises(InterplabError, match="distinct"):
        group_units(torch.ones(6, 4), n_groups=2)


@pytest.mark.parametrize("positions", [[3, 2, 1, 0], [3, 3, 3, 3, 3], [0, 3], -1])
def test_direct_logit_attribution_at_readout_positions(with_mlp, positions):
    from interplab.interventions.attribution import direct_logit_attribution
    from interplab.models import readout_positions

    d = torch.zeros(7)
    d[3], d[1] = 1.0, -1.0
    idx = readout_positions(positions, 4)
    for kind in ("head", "neuron"):
        full = direct_logit_attribution(with_mlp, CLEAN, d, kind=kind)
        got = direct_logit_attribution(with_mlp, CLEAN, d, kind=kind, model_kwargs={"positions": positions})
        torch.testing.assert_close(got, full[:, idx], atol=1e-5, rtol=0)


def test_per_position_grids_refuse_readout_positions_that_reorder_the_last_layer(attn_only):
    kw = {"positions": [3, 2, 1, 0]}  # as many readout rows as positions: the sizes alone do not tell
    with pytest.raises(InterplabError, match="per position"):
        activation_patching(attn_only, CLEAN, CORRUPT, _row_metric(0), "z", per_position=True, model_kwargs=kw)
    with pytest.raises(InterplabError, match="per position"):
        atp(attn_only, CLEAN, CORRUPT, _row_metric(0), "z", per_position=True, model_kwargs=kw)
    # resid_pre keeps every position in the last layer: allowed, and equal to the full pass read at row 0 = position 3
    got = activation_patching(attn_only, CLEAN, CORRUPT, _row_metric(0), "resid_pre", per_position=True, model_kwargs=kw)
    want = activation_patching(attn_only, CLEAN, CORRUPT, _row_metric(3), "resid_pre", per_position=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_zero_batch_size_is_refused_not_replaced_by_a_default():
    from interplab.tasks.modular import modular_task
    from interplab.tasks.superposition import SparseFeatures

    g = torch.Generator().manual_seed(0)
    tms = SparseFeatures(n_instances=1, n_features=5, steps_per_epoch=1, eval_batch=4)
    assert next(iter(tms.batches(g, 7))).shape[0] == 7
    for task in (tms, modular_task(p=5, frac_train=0.5, seed=0)):
        with pytest.raises(InterplabError, match="batch_size must be at least 1"):
            next(iter(task.batches(g, 0)))
    with pytest.raises(InterplabError, match="batch_size must be at least 1"):
        site_values(MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2)), torch.ones(2, 3), "hook_logits", batch_size=0)


def test_task_split_without_labels_is_a_sentence_not_nan():
    from interplab.tasks import IGNORE, Task

    x = torch.tensor([[0, 1, 2], [1, 2, 0]])
    task = Task("t", x, torch.full((2,), IGNORE), torch.tensor([0]), torch.tensor([1]), n_classes=3, positions=[-1])
    m = Transformer(TransformerConfig(d_vocab=3, n_ctx=3, d_model=8, n_heads=2, d_mlp=None))
    with pytest.raises(InterplabError, match="no labelled readout position"):
        task.evaluate(m)
