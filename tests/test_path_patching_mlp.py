"""Path patching with MLP receivers and with mean-ablated paths, against explicit computations."""

import pytest
import torch

from interplab.errors import InterplabError
from interplab.instrument import site_values
from interplab.interventions.ablate import ablate
from interplab.interventions.patching import activation_patching, path_patching
from interplab.models import Transformer, TransformerConfig


def _model(n_layers=2, **kw):
    cfg = dict(d_vocab=7, n_ctx=5, d_model=16, n_layers=n_layers, n_heads=2, d_mlp=24, normalization="LN")
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg), seed=5)


def _pair(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(7, (n, 5), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1:3] = torch.randint(7, (n, 2), generator=g)
    return clean, corrupt


def _metric(logits):
    return logits[:, -1, 2].mean() - logits[:, -1, 3].mean()


def _head_out(acts, m, layer, head):
    return acts[f"blocks.{layer}.attn.hook_z"][:, :, head] @ m.blocks[layer].attn.W_O[head]


def test_head_to_mlp_path_matches_an_explicit_computation():
    m = _model()
    clean, corrupt = _pair()
    with torch.no_grad():
        _, ca = m.run_with_cache(clean)
        _, xa = m.run_with_cache(corrupt)
        for layer in (0, 1):  # head (0, 1) into the MLP of its own layer, then into the next one
            delta = _head_out(ca, m, 0, 1) - _head_out(xa, m, 0, 1)
            block = m.blocks[layer]
            new_out = block.mlp(block.ln2(xa[f"blocks.{layer}.hook_resid_mid"] + delta))
            patched = m.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", lambda a, hook: new_out)])
            explicit = _metric(patched) - _metric(m(corrupt))
            got = path_patching(m, clean, corrupt, _metric, (0, 1), [(layer, "mlp")])
            assert torch.isclose(got, explicit, atol=1e-5), (layer, got, explicit)
            assert explicit.abs() > 1e-4


def test_a_head_through_every_reader_equals_activation_patching():
    # head (1, 0) of the last layer is read only by the MLP of its layer and by the logits
    m = _model()
    clean, corrupt = _pair(seed=1)
    total = path_patching(m, clean, corrupt, _metric, (1, 0), [(1, "mlp"), "logits"])
    direct = activation_patching(m, clean, corrupt, _metric, "z")[1, 0]
    assert torch.isclose(total, direct, atol=1e-5) and direct.abs() > 1e-4
    # readout at the last position only: the last layer's MLP receiver sees the same numbers
    for sender in ((1, 0), (0, None)):
        last = path_patching(m, clean, corrupt, _metric, sender, [(1, "mlp")], model_kwargs={"positions": [-1]})
        full = path_patching(m, clean, corrupt, _metric, sender, [(1, "mlp")])
        assert torch.isclose(last, full, atol=1e-5)


def test_mean_ablated_paths_match_explicit_mean_ablation():
    m = _model()
    clean, _ = _pair(seed=2)
    reference = torch.randint(7, (40, 5), generator=torch.Generator().manual_seed(9))
    # every reader of head (1, 1) is a receiver: equals mean-ablating the head's z
    got = path_patching(m, clean, None, _metric, (1, 1), [(1, "mlp"), "logits"], reference=reference)
    with torch.no_grad():
        _, ra = m.run_with_cache(reference)
        z_mean = ra["blocks.1.attn.hook_z"][:, :, 1].mean(0, keepdim=True)

        def mean_z(z, hook):
            z = z.clone()
            z[:, :, 1] = z_mean
            return z

        explicit = _metric(m.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_z", mean_z)])) - _metric(m(clean))
    assert torch.isclose(got, explicit, atol=1e-5) and explicit.abs() > 1e-4
    # one path of MLP 0, into the next MLP only, by hand; the sum over all its paths differs
    # from mean-ablating MLP 0 by the indirect paths through layer 1's heads
    site = "blocks.0.hook_mlp_out"
    with torch.no_grad():
        _, ca = m.run_with_cache(clean)
        delta = ra[site].mean(0, keepdim=True) - ca[site]
        new_out = m.blocks[1].mlp(m.blocks[1].ln2(ca["blocks.1.hook_resid_mid"] + delta))
        patched = m.run_with_hooks(clean, fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, hook: new_out)])
    one = path_patching(m, clean, None, _metric, (0, None), [(1, "mlp")], reference=reference)
    assert torch.isclose(one, _metric(patched) - _metric(m(clean)), atol=1e-5) and one.abs() > 1e-4
    every = [(1, h, x) for h in range(2) for x in "qkv"] + [(1, "mlp"), "logits"]
    with torch.no_grad():
        ablated = _metric(ablate(m, clean, site, "mean", reference=site_values(m, reference, site))) - _metric(m(clean))
    assert abs(path_patching(m, clean, None, _metric, (0, None), every, reference=reference) - ablated) < 0.2 * abs(ablated)


def test_path_patching_receiver_errors():
    m = _model()
    clean, corrupt = _pair()
    with pytest.raises(InterplabError, match="MLP after the sender"):
        path_patching(m, clean, corrupt, _metric, (1, None), [(0, "mlp")])
    with pytest.raises(InterplabError, match="MLP after the sender"):
        path_patching(m, clean, corrupt, _metric, (0, None), [(0, "mlp")])
    with pytest.raises(InterplabError, match="one of the two"):
        path_patching(m, clean, corrupt, _metric, (0, 0), ["logits"], reference=clean)
    with pytest.raises(InterplabError, match="no MLP to receive"):
        path_patching(_model(d_mlp=None), clean, corrupt, _metric, (0, 0), [(1, "mlp")])
