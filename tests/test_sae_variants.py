"""The seed's SAE variants: decoder norm <= 1 with weight decay, no pre-encoder bias, ghost schedules, seed-dead-only."""

import torch

from interplab.sae.ghost import ghost_loss
from interplab.sae.model import SAE, SAEConfig
from interplab.sae.train import SAETrainConfig, sae_step


def test_decoder_at_most_one_with_weight_decay_shrinks_rows():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=6, d_sae=12), seed=0)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2, betas=(0.0, 0.999))
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(30):
        sae_step(sae, opt, x, 1e-2, decoder_norm="at-most-1", weight_decay=1.0)
    norms = sae.W_dec.detach().norm(dim=1)
    assert float(norms.max()) <= 1 + 1e-6 and float(norms.min()) < 0.99  # clipped, not held at 1
    unit = SAE(SAEConfig(d_in=6, d_sae=12), seed=0)
    opt = torch.optim.Adam(unit.parameters(), lr=1e-2, betas=(0.0, 0.999))
    for _ in range(30):
        sae_step(unit, opt, x, 1e-2)
    assert torch.allclose(unit.W_dec.detach().norm(dim=1), torch.ones(12), atol=1e-6)


def test_no_pre_encoder_bias():
    sae = SAE(SAEConfig(d_in=4, d_sae=8, apply_b_dec_to_input=False), seed=0)
    with torch.no_grad():
        sae.b_dec.fill_(3.0)
    x = torch.randn(5, 4)
    assert torch.allclose(sae.pre_acts(x), x @ sae.W_enc + sae.b_enc)
    with_bias = SAE(SAEConfig(d_in=4, d_sae=8), seed=0)
    with torch.no_grad():
        with_bias.b_dec.fill_(3.0)
    assert not torch.allclose(with_bias.pre_acts(x), sae.pre_acts(x))
    out = sae.loss(x, 0.0)
    out.loss.backward()
    # b_dec then only gets gradient through the decoder: equal to d mse / d x_hat summed
    assert torch.allclose(sae.b_dec.grad, (2 * (out.x_hat - x) / 5).sum(0).detach(), atol=1e-5)


def test_ghost_schedule_all_features_then_dead_then_off():
    cfg = SAETrainConfig(dead_fix="ghost-dead-only", dead_window=3, ghost_all_steps=2, ghost_stop_step=6)
    since = torch.tensor([0, 1, 4, 9])
    assert cfg.ghost_dead(1, since).tolist() == [True] * 4
    assert cfg.ghost_dead(2, since).tolist() == [False, False, True, True]
    assert cfg.ghost_dead(6, since) is None
    assert SAETrainConfig(dead_fix="resample").ghost_dead(0, since) is None


def test_dead_only_is_rescaled_and_seed_variant_is_not():
    sae = SAE(SAEConfig(d_in=6, d_sae=12), seed=0)
    with torch.no_grad():
        sae.b_enc[:4] = -5.0
    dead = torch.zeros(12, dtype=torch.bool)
    dead[:4] = True
    for scale in (1.0, 10.0):  # the rescaled loss tracks the reconstruction loss's size; the seed's does not
        x = scale * torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
        out = sae.loss(x, 0.0)
        ours = ghost_loss(sae, x, out, dead, "dead-only")
        seed = ghost_loss(sae, x, out, dead, "seed-dead-only")
        main = out.mse.item()
        # ours: per input, main_err / ghost_err * ghost_err = main_err in value: equals the MSE
        assert abs(ours.item() - main) / main < 1e-3
        # seed: the mean squared ghost error times the dead fraction 4/12
        pre = (x - sae.b_dec) @ sae.W_enc[:, dead] + sae.b_enc[dead]
        g = torch.exp(pre.clamp(max=0)) @ sae.W_dec[dead]
        r = (x - out.x_hat).detach()
        g = g * (r.norm(dim=-1) / (2 * g.norm(dim=-1) + 1e-6))[:, None]
        expected = (g - r).pow(2).sum(-1).mean() * 4 / 12
        assert abs(seed.item() - expected.item()) / expected.item() < 1e-4
        sae.zero_grad()
        seed.backward()
        assert sae.b_dec.grad is None or float(sae.b_dec.grad.abs().sum()) == 0
        assert float(sae.W_enc.grad[:, 4:].abs().sum()) == 0 and float(sae.W_enc.grad[:, :4].abs().sum()) > 0
