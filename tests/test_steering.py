"""Steering vectors, SAE views, coefficient sweeps."""

import pytest
import torch

from interplab.errors import InterplabError
from interplab.interventions.steering import (coefficient_sweep, sae_views, sample_continuations, steering_hook,
                                              steering_vector)
from interplab.models import Transformer, TransformerConfig
from interplab.sae.model import SAE, SAEConfig

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return Transformer(TransformerConfig(d_vocab=10, n_ctx=10, d_model=16, n_heads=2, d_mlp=32), seed=0)


def test_vector_towards_a_token_raises_success_and_costs_loss(model):
    v = model.W_U.detach()[:, 5]
    text = torch.randint(10, (8, 10), generator=torch.Generator().manual_seed(1))
    r = coefficient_sweep(model, HOOK, {"to5": v}, [0.0, 30.0], torch.tensor([1, 2, 3]),
                          lambda toks: bool((toks == 5).any()), text, n_samples=24, max_new_tokens=3, quiet=True)
    (c0, p0, loss0), (c1, p1, loss1) = r["to5"]
    assert p0 < 0.9 and p1 == 1.0 and loss1 > loss0
    # the same seed gives the same samples: a zero vector reproduces coefficient 0
    again = coefficient_sweep(model, HOOK, {"zero": torch.zeros(16)}, [1.0], torch.tensor([1, 2, 3]),
                              lambda toks: bool((toks == 5).any()), text, n_samples=24, max_new_tokens=3, quiet=True)
    assert again["zero"][0][1:] == [p0, loss0]


def test_vector_per_position_and_errors(model):
    v = steering_vector(model, HOOK, torch.tensor([[1, 2, 3], [1, 2, 4]]), torch.tensor([[1, 6, 3], [1, 6, 4]]))
    assert v.shape == (3, 16) and float(v[0].abs().max()) < 1e-6 and float(v[1].abs().max()) > 0
    with pytest.raises(InterplabError, match="same shape"):
        steering_vector(model, HOOK, torch.tensor([[1, 2]]), torch.tensor([[1, 2, 3]]))
    with pytest.raises(InterplabError, match="context"):
        sample_continuations(model, torch.tensor([1, 2, 3]), n=1, max_new_tokens=8)
    # a [P, d] vector acts only from `start` on: earlier positions are untouched
    _, fn = steering_hook(HOOK, torch.ones(2, 16), 1.0, start=3)
    act = torch.zeros(1, 6, 16)
    assert fn(act, None)[0, :, 0].tolist() == [0, 0, 0, 1, 1, 0]


def test_sae_views(model):
    sae = SAE(SAEConfig(d_in=16, d_sae=48, hook_name=HOOK, act_scale=0.5), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    pos, neg = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 7, 8]])
    views = sae_views(sae, model, pos, neg, k=48)
    # with every feature kept, the sparse view is the reconstruction difference
    assert torch.allclose(views["features"], views["recon_diff"], atol=1e-5)
    few = sae_views(sae, model, pos, neg, k=3)
    assert int((few["feature_diff"] != 0).any(0).sum()) > 3
    top = few["feature_diff"].abs().sum(0).topk(3).indices
    Q, _ = torch.linalg.qr(sae.W_dec.detach()[top].T)  # the sparse view lies in the span of the 3 features
    assert float((few["features"] - few["features"] @ Q @ Q.T).abs().max()) < 1e-5
    assert float(few["features"].abs().max()) > 1e-3
    # single feature: the decoder row of the biggest difference, at the original's norm
    i = int(few["feature_diff"].sum(0).argmax())
    assert torch.allclose(few["single"].norm(dim=-1), few["original"].norm(dim=-1), atol=1e-5)
    assert torch.allclose(torch.nn.functional.cosine_similarity(few["single"][1], sae.W_dec.detach()[i], dim=0),
                          torch.tensor(1.0), atol=1e-5)
    # projected: the original minus the irrelevant features' contributions; with every feature relevant it is
    # the original, with none it is the SAE's error term
    assert torch.allclose(views["projected"], views["original"], atol=1e-5)
    assert torch.allclose(few["projected"] - few["features"], few["original"] - few["recon_diff"], atol=1e-5)


@torch.no_grad()
def test_hook_changes_next_token_distribution_with_the_coefficient(model):
    # the diagnosis of a flat P(success): does the added vector reach the logits, and more so when larger?
    v = steering_vector(model, HOOK, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 4]]))[-1]
    x = torch.tensor([[1, 5, 6, 7]])
    clean = model(x)[0, -1].log_softmax(-1)
    kl = []
    for c in (0.0, 1.0, 8.0):
        steered = model.run_with_hooks(x, fwd_hooks=[steering_hook(HOOK, v, c)])[0, -1].log_softmax(-1)
        kl.append(float((clean.exp() * (clean - steered)).sum()))
    assert kl[0] == 0.0 and 0 < kl[1] < kl[2] and kl[2] > 0.05


def test_prompt_sets_of_different_lengths_align_at_their_ends(model):
    from interplab.instrument import cache

    pos = [torch.tensor([1, 2, 3]), torch.tensor([1, 4, 2, 3])]
    neg = [torch.tensor([1, 6, 7, 8, 9]), torch.tensor([1, 6, 9]), torch.tensor([1, 5, 5])]
    v = steering_vector(model, HOOK, pos, neg)
    assert v.shape == (3, 16)

    def last3(t):
        return cache(model, t[None], names=HOOK)[1][HOOK][0, -3:]

    want = torch.stack([last3(t) for t in pos]).mean(0) - torch.stack([last3(t) for t in neg]).mean(0)
    assert torch.allclose(v, want, atol=1e-5)
    sae = SAE(SAEConfig(d_in=16, d_sae=32, hook_name=HOOK), seed=0)
    views = sae_views(sae, model, pos, neg, k=32)
    assert torch.allclose(views["original"], v) and torch.allclose(views["features"], views["recon_diff"], atol=1e-5)
    with pytest.raises(InterplabError, match="no empty prompt"):
        steering_vector(model, HOOK, [torch.tensor([1, 2])], [])


def test_positions_select_where_the_vector_is_read(model):
    pos, neg = [torch.tensor([1, 2, 3]), torch.tensor([1, 4, 2, 3])], [torch.tensor([1, 6, 7, 8])]
    full = steering_vector(model, HOOK, pos, neg)
    assert torch.equal(steering_vector(model, HOOK, pos, neg, positions=-1), full[-1:])
    sae = SAE(SAEConfig(d_in=16, d_sae=32, hook_name=HOOK), seed=0)
    views = sae_views(sae, model, pos, neg, k=4, positions=[-1])
    assert all(v.shape == (1, 16) for name, v in views.items() if name != "feature_diff")
    assert torch.allclose(views["original"], full[-1:])
