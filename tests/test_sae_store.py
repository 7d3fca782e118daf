"""Activation store on a transformer: positions, BOS, normalisation, disk shards, exact resume, LM loss recovered."""

import math

import pytest
import torch

from interplab.errors import InterplabError
from interplab.models import Transformer, TransformerConfig
from interplab.sae.metrics import lm_loss_recovered
from interplab.sae.model import SAE, SAEConfig
from interplab.sae.store import ActivationStore, TokenSite, run_site, write_shards
from interplab.sae.train import SAETrainConfig, train_sae
from interplab.runs import load_checkpoint

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return Transformer(TransformerConfig(d_vocab=13, n_ctx=8, d_model=16, n_heads=2, d_mlp=32, n_layers=1), seed=0)


@pytest.fixture(scope="module")
def tokens():
    t = torch.randint(1, 13, (60, 8), generator=torch.Generator().manual_seed(0))
    t[:, 0] = 0  # BOS
    return t


def _sorted_rows(x):
    key = x.double() @ torch.randn(x.shape[1], generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    return x[torch.argsort(key)]


def test_store_positions_bos_and_normalisation(model, tokens):
    all_rows = run_site(model, HOOK, tokens, exclude_bos=False)
    assert all_rows.shape == (60 * 8, 16)
    assert run_site(model, HOOK, tokens).shape == (60 * 7, 16)
    last = run_site(model, HOOK, tokens, positions=[-1])
    assert torch.equal(last, all_rows.reshape(60, 8, 16)[:, -1])
    store = ActivationStore.from_model(model, HOOK, tokens, torch.Generator().manual_seed(1), size=7 * 60,
                                       model_batch=7, norm_rows=10**6)
    # the scale makes the mean norm over the whole set sqrt(d) exactly
    no_bos = run_site(model, HOOK, tokens)
    assert abs((no_bos * store.scale).norm(dim=-1).mean().item() - math.sqrt(16)) < 1e-4
    # one buffer of the whole set: every non-BOS row once, scaled, in a shuffled order
    batch = torch.cat([store.next(30) for _ in range(7)])
    assert not torch.equal(batch, no_bos[:210] * store.scale)
    rows = store.rows
    assert torch.allclose(_sorted_rows(rows), _sorted_rows(no_bos * store.scale), atol=1e-6)
    with pytest.raises(InterplabError, match="no activation site"):
        ActivationStore.from_model(model, "blocks.9.hook_resid_post", tokens)


def test_shards_hold_every_row_once_and_bound_memory(model, tokens, tmp_path):
    d = write_shards(model, HOOK, tokens, tmp_path / "acts", shard_rows=50, model_batch=6, quiet=True)
    store = ActivationStore.from_shards(d, torch.Generator().manual_seed(0), size=100)
    assert len(store.source.shards) == math.ceil(60 * 7 / 50)
    ref = run_site(model, HOOK, tokens) * store.scale
    assert abs(ref.norm(dim=-1).mean().item() - 4.0) < 1e-4
    for _ in range(60):  # more than one pass over the 420 rows
        store.next(10)
    assert store.peak_rows <= 1.5 * 100 + 50
    # one pass of the source reads every row exactly once
    g = torch.Generator().manual_seed(3)
    store.source.reset()
    one_pass = torch.cat([store.source.next_chunk(g) for _ in range(len(store.source.shards))]) * store.scale
    assert torch.allclose(_sorted_rows(one_pass), _sorted_rows(ref), atol=1e-5)


def test_sae_training_from_shards_resumes_bitwise(model, tokens, tmp_path):
    d = write_shards(model, HOOK, tokens, tmp_path / "acts", shard_rows=40, quiet=True)
    cfg = SAETrainConfig(steps=24, batch_size=16, buffer_size=64, log_every=4, checkpoint_every=8,
                         dead_fix="ghost-dead-only", dead_window=3, ghost_all_steps=5)

    def fresh(fail_after=None):
        store = ActivationStore.from_shards(d, size=64)
        if fail_after is not None:
            calls, inner = [0], store.source.next_chunk

            def crashing(g):  # simulates a crash part-way through training
                calls[0] += 1
                if calls[0] > fail_after:
                    raise KeyboardInterrupt
                return inner(g)

            store.source.next_chunk = crashing
        return SAE(SAEConfig(d_in=16, d_sae=48, hook_name=HOOK, act_scale=store.scale), seed=0), store

    sae, store = fresh()
    full = train_sae(sae, store, cfg, tmp_path / "full", quiet=True)
    sae2, store2 = fresh(fail_after=8)
    with pytest.raises(KeyboardInterrupt):
        train_sae(sae2, store2, cfg, tmp_path / "part", quiet=True)
    assert 8 <= load_checkpoint(tmp_path / "part" / "checkpoints" / "state.pt")["epoch"] < 24
    sae3, store3 = fresh()
    resumed = train_sae(sae3, store3, cfg, tmp_path / "part", resume=True, quiet=True)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, sae3.state_dict()[k]), k
    assert [m["mse"] for m in full.metrics] == [m["mse"] for m in resumed.metrics]
    assert full.metrics[0]["ghost_loss"] > 0


def test_lm_loss_recovered_orders_identity_sae_and_ablation(model, tokens):
    sae = SAE(SAEConfig(d_in=16, d_sae=32, hook_name=HOOK), seed=0)
    ident = lm_loss_recovered(model, tokens, sae, reconstruct=lambda a: a)
    assert ident["recovered_zero"] == 1.0 and ident["sae"] == ident["clean"]
    zero = lm_loss_recovered(model, tokens, sae, reconstruct=torch.zeros_like)
    assert abs(zero["recovered_zero"]) < 1e-9 and zero["zero"] != zero["clean"]
    # BOS is left alone: splicing zeros everywhere else differs from zeroing BOS too
    everywhere = lm_loss_recovered(model, tokens, sae, site=TokenSite(HOOK, exclude_bos=False),
                                   reconstruct=torch.zeros_like)
    assert everywhere["sae"] != zero["sae"]


def test_ito_trained_dictionary_beats_random_at_low_l0(model, tokens):
    from interplab.interventions.steering import sample_continuations
    from interplab.sae.ito import ito_loss_recovered

    # text the model itself writes (low temperature), so that its residual stream matters for the loss
    own = torch.cat([torch.cat([torch.tensor([[0, t]]).expand(6, 2),
                                sample_continuations(model, torch.tensor([0, t]), 6, 6, temperature=0.3, seed=t)], 1)
                     for t in range(1, 13)])
    store = ActivationStore.from_model(model, HOOK, own, size=256, model_batch=8)
    cfg = SAETrainConfig(steps=300, batch_size=64, buffer_size=256, lr=3e-3, l1_coeff=0.2, log_every=300)
    sae = SAE(SAEConfig(d_in=16, d_sae=32, hook_name=HOOK, act_scale=store.scale), seed=0)
    train_sae(sae, store, cfg, quiet=True)
    r = ito_loss_recovered(model, own, sae, [2, 16], methods=("omp", "gp"))
    for m in ("omp", "gp"):
        (_, sae_low, _, _), (_, sae_full, _, _) = r["sae"][m]
        (_, rnd_low, _, _), _ = r["random"][m]
        assert sae_low > rnd_low + 0.05, (m, sae_low, rnd_low)
    assert r["sae"]["omp"][1][1] > 0.99  # 16 atoms in 16 dimensions: exact


def test_cache_stop_skips_later_layers(model, tokens):
    from interplab.instrument import cache

    seen = []
    model.hook_dict["blocks.0.hook_resid_post"].add_hook(lambda a, hook: seen.append(1))
    try:
        out, acts = cache(model, tokens[:3], names="blocks.0.hook_resid_pre", stop=True)
        assert out is None and not seen  # the block after the site never ran
        full, ref = cache(model, tokens[:3], names="blocks.0.hook_resid_pre")
        assert full is not None and seen and torch.equal(acts["blocks.0.hook_resid_pre"], ref["blocks.0.hook_resid_pre"])
    finally:
        model.reset_hooks()
