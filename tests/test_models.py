"""The model zoo: shapes, TransformerLens site names, readout positions, save/load."""

from __future__ import annotations

import pytest
import torch

from interplab.errors import InterplabError
from interplab.models import (MLP, ConvNet, ConvNetConfig, MLPConfig, TMSConfig, ToyModelOfSuperposition, Transformer,
                              TransformerConfig)
from interplab.runs import load, save_model

CONFIGS = [
    TransformerConfig(d_vocab=12, n_ctx=6, d_model=32, n_layers=2, n_heads=4, d_mlp=64),
    TransformerConfig(d_vocab=12, n_ctx=6, d_model=32, n_layers=2, n_heads=4, d_mlp=64, normalization="LN",
                      act_fn="gelu"),
    TransformerConfig(d_vocab=12, n_ctx=6, d_model=32, n_layers=2, n_heads=2, d_head=8, d_mlp=None, bias=False),
    TransformerConfig(d_vocab=12, n_ctx=6, d_model=32, n_layers=1, n_heads=4, d_mlp=64, act_fn="solu",
                      normalization="LN", d_vocab_out=5),
    TransformerConfig(d_vocab=12, n_ctx=12, d_model=32, n_layers=2, n_heads=4, d_mlp=64),  # long-context path
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_readout_positions_match_full_forward(cfg: TransformerConfig) -> None:
    model = Transformer(cfg, seed=1)
    n = cfg.n_ctx
    tokens = torch.randint(cfg.d_vocab, (7, n), generator=torch.Generator().manual_seed(0))
    full = model(tokens)
    assert full.shape == (7, n, cfg.vocab_out)
    for positions in ([-1], [0, 3], [2, 5, 1]):
        part = model(tokens, positions=positions)
        assert torch.allclose(part, full[:, [p % n for p in positions]], atol=1e-5)


def test_short_and_long_context_attention_agree() -> None:
    import interplab.models.transformer as tr

    cfg = TransformerConfig(d_vocab=12, n_ctx=6, d_model=32, n_layers=2, n_heads=4, d_mlp=64)
    model = Transformer(cfg, seed=2)
    tokens = torch.randint(12, (5, 6))
    short = model(tokens)
    old, tr.SHORT_CONTEXT = tr.SHORT_CONTEXT, 0
    try:
        long = model(tokens)
    finally:
        tr.SHORT_CONTEXT = old
    assert torch.allclose(short, long, atol=1e-5)


def test_transformer_sites_follow_transformerlens_names() -> None:
    model = Transformer(CONFIGS[1])
    _, cache = model.run_with_cache(torch.zeros(2, 6, dtype=torch.long))
    for name, shape in {
        "hook_embed": (2, 6, 32), "hook_pos_embed": (6, 32), "blocks.1.hook_resid_pre": (2, 6, 32),
        "blocks.0.attn.hook_q": (2, 6, 4, 8), "blocks.0.attn.hook_pattern": (2, 4, 6, 6),
        "blocks.0.attn.hook_z": (2, 6, 4, 8), "blocks.0.hook_attn_out": (2, 6, 32),
        "blocks.0.hook_resid_mid": (2, 6, 32), "blocks.0.mlp.hook_pre": (2, 6, 64),
        "blocks.1.mlp.hook_post": (2, 6, 64), "blocks.1.hook_mlp_out": (2, 6, 32),
        "blocks.1.hook_resid_post": (2, 6, 32), "blocks.0.ln1.hook_normalized": (2, 6, 32),
    }.items():
        assert tuple(cache[name].shape) == shape, name


def test_attention_is_causal_and_patterns_sum_to_one() -> None:
    model = Transformer(CONFIGS[0])
    _, cache = model.run_with_cache(torch.randint(12, (3, 6)))
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(3, 4, 6))
    assert pattern.triu(1).abs().max() == 0


def test_patching_a_site_changes_downstream_only() -> None:
    model = Transformer(CONFIGS[0])
    tokens = torch.randint(12, (2, 6))
    clean = model(tokens)
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", lambda x, hook: torch.zeros_like(x))])
    assert not torch.allclose(clean, zeroed)
    same = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", lambda x, hook: x)])
    assert torch.equal(clean, same)


def test_same_seed_same_weights_and_different_seed_differs() -> None:
    a, b, c = Transformer(CONFIGS[0], seed=3), Transformer(CONFIGS[0], seed=3), Transformer(CONFIGS[0], seed=4)
    assert torch.equal(a.W_E, b.W_E) and not torch.equal(a.W_E, c.W_E)


def test_bad_inputs_are_one_sentence_errors() -> None:
    model = Transformer(CONFIGS[0])
    with pytest.raises(InterplabError, match="exceeds n_ctx"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InterplabError, match="tokens must lie in"):
        model(torch.full((1, 3), 99))
    with pytest.raises(InterplabError, match="out of range"):
        model(torch.zeros(1, 3, dtype=torch.long), positions=[5])
    with pytest.raises(InterplabError, match="divisible"):
        TransformerConfig(d_vocab=5, n_ctx=3, d_model=10, n_heads=3)


def test_mlp_tms_and_convnet_shapes_and_sites() -> None:
    mlp = MLP(MLPConfig(d_in=6, d_hidden=(16, 8), d_out=3))
    out, cache = mlp.run_with_cache(torch.randn(4, 6))
    assert out.shape == (4, 3) and cache["layers.1.hook_pre"].shape == (4, 8)
    assert (cache["layers.0.hook_post"] >= 0).all()
    tms = ToyModelOfSuperposition(TMSConfig(n_instances=5, n_features=6, n_hidden=2))
    out, cache = tms.run_with_cache(torch.rand(8, 5, 6))
    assert out.shape == (8, 5, 6) and cache["hook_hidden"].shape == (8, 5, 2) and (out >= 0).all()
    net = ConvNet(ConvNetConfig())
    out, cache = net.run_with_cache(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 2)
    assert cache["conv1.hook_post"].shape == (2, 8, 26, 26) and cache["conv2.hook_pre"].shape == (2, 16, 11, 11)
    assert cache["fc1.hook_pre"].shape == (2, 200)


@pytest.mark.parametrize("model", [Transformer(CONFIGS[2], seed=5), MLP(MLPConfig(3, (4,), 2), seed=2),
                                   ToyModelOfSuperposition(TMSConfig(2, 5, 2), seed=1), ConvNet(seed=3)])
def test_save_and_load_round_trip(model: torch.nn.Module, tmp_path) -> None:
    save_model(tmp_path, model)
    loaded = load(tmp_path)
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_published_cnn_loads_and_classifies_mnist(shared_data) -> None:
    from interplab.models import pixels_to_input
    from interplab.tasks.mnist import load_mnist

    net = ConvNet.from_file(shared_data / "eis-vii" / "mnist_model.pt")
    images, digits = load_mnist("test", shared_data)
    assert images.shape == (10000, 28, 28) and set(digits.tolist()) == set(range(10))
    with torch.no_grad():
        logits = net(pixels_to_input(images))
    predicted = logits.argmax(-1)
    frac_one = predicted.float().mean().item()
    assert 0.1 < frac_one < 0.9, frac_one  # both classes are predicted in sane proportions
    confident = (logits.softmax(-1).max(-1).values > 0.9).float().mean().item()
    assert confident > 0.7  # the network is mostly confident on real digits


def test_corrupt_model_file_is_one_sentence(tmp_path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"this is not a state dict")
    with pytest.raises(InterplabError, match="corrupt"):
        ConvNet.from_file(bad)
