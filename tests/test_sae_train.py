"""SAE training: buffer, exact resume, dead-feature fixes, recovery of a known dictionary."""

import pytest
import torch
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interplab.errors import InterplabError
from interplab.instrument import Site
from interplab.models import MLP, MLPConfig
from interplab.sae.buffer import ActivationBuffer, sample_rows
from interplab.sae.ghost import ghost_loss
from interplab.sae.metrics import mmcs
from interplab.sae.model import SAE, SAEConfig
from interplab.sae.saelens import load_saelens
from interplab.sae.train import SAETrainConfig, make_buffer, train_sae
from interplab.runs import load_checkpoint


class Identity(HookedRootModule):
    """A 'model' whose only site is its input: lets a test feed synthetic activations."""

    def __init__(self):
        super().__init__()
        self.hook_x = HookPoint()
        self.setup()

    def forward(self, x):
        return self.hook_x(x)


def _sparse_sampler(D, p=0.05):
    def sample(g, n):
        on = torch.rand(n, D.shape[0], generator=g) < p
        return (on * torch.rand(n, D.shape[0], generator=g)) @ D

    return sample


def test_buffer_refills_when_half_used_and_mixes_inputs():
    model = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2))
    buf = ActivationBuffer(model, Site("layers.0.hook_pre"), sample_rows(torch.randn(1000, 3)),
                           torch.Generator().manual_seed(0), size=40, model_batch=7)
    first = buf.next(10).clone()
    buf.next(10)
    assert buf.ptr == 20
    buf.next(10)  # would pass the half: refill and reshuffle first
    assert buf.ptr == 10 and not torch.equal(first, buf.rows[:10])


def test_sae_recovers_a_known_dictionary():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(24, 12, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    cfg = SAETrainConfig(steps=800, batch_size=128, lr=3e-3, l1_coeff=0.3, buffer_size=4096, log_every=400)
    buf = make_buffer(Identity(), Site("hook_x"), _sparse_sampler(D), cfg)
    sae = SAE(SAEConfig(d_in=12, d_sae=24, hook_name="hook_x"), seed=0)
    train_sae(sae, buf, cfg, quiet=True)
    assert mmcs(sae.W_dec.detach(), D) > 0.98


def test_resume_is_bitwise_exact(tmp_path):
    D = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    D /= D.norm(dim=1, keepdim=True)
    cfg = SAETrainConfig(steps=30, batch_size=32, buffer_size=128, log_every=5, checkpoint_every=10,
                         dead_fix="resample", dead_window=3, resample_every=10, resample_rows=64)

    def fresh(fail_after=None):
        calls = [0]
        sample = _sparse_sampler(D)

        def sampler(g, n):  # simulates a crash part-way through training
            calls[0] += 1
            if fail_after is not None and calls[0] > fail_after:
                raise KeyboardInterrupt
            return sample(g, n)

        sae = SAE(SAEConfig(d_in=8, d_sae=32), seed=0)
        with torch.no_grad():
            sae.b_enc[:8] = -3.0  # dead from the start, so resampling has work to do
        return sae, make_buffer(Identity(), Site("hook_x"), sampler, cfg)

    sae, buf = fresh()
    full = train_sae(sae, buf, cfg, tmp_path / "full", quiet=True)
    sae2, buf2 = fresh(fail_after=12)
    with pytest.raises(KeyboardInterrupt):
        train_sae(sae2, buf2, cfg, tmp_path / "part", quiet=True)
    assert 10 <= load_checkpoint(tmp_path / "part" / "checkpoints" / "state.pt")["epoch"] < 30
    with pytest.raises(InterplabError, match="already holds"):
        train_sae(*fresh(), cfg, tmp_path / "part", quiet=True)
    sae3, buf3 = fresh()
    resumed = train_sae(sae3, buf3, cfg, tmp_path / "part", resume=True, quiet=True)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, sae3.state_dict()[k]), k
    assert full.resampled == resumed.resampled and full.resampled  # resampling happened, identically
    assert [m["mse"] for m in full.metrics] == [m["mse"] for m in resumed.metrics]
    back = load_saelens(tmp_path / "part")  # the SAELens-layout result
    assert torch.equal(back.W_dec, sae3.W_dec)


def test_ghost_variants_differ_as_documented():
    sae = SAE(SAEConfig(d_in=6, d_sae=12), seed=0)
    with torch.no_grad():
        sae.b_enc[:4] = -5.0  # dead features with very negative pre-activations
    x = torch.randn(64, 6)
    dead = torch.zeros(12, dtype=torch.bool)
    dead[:4] = True
    grads = {}
    for variant in ("original", "scaled", "dead-only"):
        sae.zero_grad()
        out = sae.loss(x, 0.0)
        loss = ghost_loss(sae, x, out, dead, variant)
        loss.backward()
        b_dec_grad = 0.0 if sae.b_dec.grad is None else sae.b_dec.grad.abs().sum().item()
        grads[variant] = (loss.item(), b_dec_grad, sae.W_enc.grad[:, 4:].abs().sum().item())
    assert abs(grads["scaled"][0] - grads["original"][0] * 4 / 12) < 1e-5
    assert grads["original"][1] > 0 and grads["dead-only"][1] == 0
    assert all(g[2] == 0 for g in grads.values())  # live features get no ghost gradient
    # capped activation: exp(min(pre, 0)) <= 1 even where pre is large
    with torch.no_grad():
        sae.b_enc[:4] = 50.0
    out = sae.loss(x, 0.0)
    assert torch.isfinite(ghost_loss(sae, x, out, dead, "original", capped=True))


def test_dead_fixes_act_on_dead_features():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(16, 8, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    x = _sparse_sampler(D)(torch.Generator().manual_seed(5), 2000)
    pre, dead_after = {}, {}
    for fix in ("none", "resample", "ghost-original", "ghost-scaled", "ghost-dead-only"):
        cfg = SAETrainConfig(steps=200, batch_size=64, lr=3e-3, l1_coeff=0.1, buffer_size=1024, dead_fix=fix,
                             dead_window=20, resample_every=100, log_every=200)
        sae = SAE(SAEConfig(d_in=8, d_sae=32), seed=0)
        with torch.no_grad():
            sae.b_enc[:16] = -3.0  # half the features start dead
        train_sae(sae, make_buffer(Identity(), Site("hook_x"), _sparse_sampler(D), cfg), cfg, quiet=True)
        with torch.no_grad():
            pre[fix] = sae.pre_acts(x)[:, :16].mean().item()
            dead_after[fix] = int(((sae.encode(x) > 0).sum(0) == 0).sum())
    assert dead_after["none"] == 16 and dead_after["resample"] == 0
    for fix in ("ghost-original", "ghost-scaled", "ghost-dead-only"):
        # dead features get no gradient from the main loss; the ghost term lifts them towards firing
        assert pre[fix] > pre["none"] + 0.1, (fix, pre)


def test_jumprelu_loads_but_does_not_train():
    cfg = SAETrainConfig(steps=2, batch_size=4, buffer_size=16)
    buf = make_buffer(Identity(), Site("hook_x"), sample_rows(torch.randn(50, 4)), cfg)
    sae = SAE(SAEConfig(d_in=4, d_sae=8, hook_name="hook_x", architecture="jumprelu"), seed=0)
    with pytest.raises(InterplabError, match="JumpReLU SAEs can be loaded and used but not trained"):
        train_sae(sae, buf, cfg, quiet=True)
