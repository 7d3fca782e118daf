"""trace() against run_with_hooks on every model in the zoo, masked patching, non-interleaving; cache with
hooks and gradient leaves, batched runs and predictions."""

import pytest
import torch

from interplab.errors import InterplabError
from interplab.instrument import (Site, cache, default_readout, masked_patch, predict, run_batches, run_with_patches,
                                  site_values, trace)
from interplab.models import (MLP, ConvNet, ConvNetConfig, MLPConfig, TMSConfig, ToyModelOfSuperposition,
                              Transformer, TransformerConfig)


def _zoo():
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, 11, (3, 6), generator=g)
    tcfg = dict(d_vocab=11, n_ctx=6, d_model=16, n_heads=2)
    return {
        "transformer": (Transformer(TransformerConfig(**tcfg, d_mlp=32), seed=1), (toks,), {}),
        "transformer-ln-gelu": (Transformer(TransformerConfig(**tcfg, d_mlp=32, normalization="LN", act_fn="gelu",
                                                              n_layers=2), seed=2), (toks,), {}),
        "attn-only-3-layers": (Transformer(TransformerConfig(**tcfg, d_mlp=None, n_layers=3), seed=3), (toks,), {}),
        "readout-positions": (Transformer(TransformerConfig(**tcfg, d_mlp=32, n_layers=2, bias=False,
                                                            normalization="LN"), seed=4),
                              (toks,), {"positions": [-1, 2]}),
        "solu": (Transformer(TransformerConfig(**tcfg, d_mlp=32, act_fn="solu"), seed=5), (toks,), {}),
        "mlp": (MLP(MLPConfig(d_in=5, d_hidden=(7, 6), d_out=3), seed=0), (torch.randn(4, 5, generator=g),), {}),
        "convnet": (ConvNet(ConvNetConfig(channels1=2, channels2=3, d_fc=8), seed=0),
                    (torch.rand(2, 28, 28, generator=g),), {}),
        "tms": (ToyModelOfSuperposition(TMSConfig(n_instances=2, n_features=5, n_hidden=2), seed=0),
                (torch.rand(4, 2, 5, generator=g),), {}),
    }


def _edit(name: str, act: torch.Tensor, i: int) -> torch.Tensor:
    # a deterministic, site-dependent edit that changes every later number
    return act * (1.0 + 0.01 * (i % 7)) + 0.001 * i


ZOO = _zoo()


@pytest.mark.parametrize("name", list(ZOO))
def test_trace_matches_run_with_hooks_exactly(name):
    model, args, kw = ZOO[name]
    order = list(model.hook_dict)
    # reading: every site, the same values and order as the hooks see them
    seen = []
    tr = trace(model, *args, **kw)
    for site in tr:
        seen.append((site.name, site.value.clone()))
    ref_out, ref = cache(model, *args, **kw)
    assert [n for n, _ in seen] == list(ref)
    assert set(n for n, _ in seen) <= set(order)
    assert all(torch.equal(v, ref[n]) for n, v in seen)
    assert torch.equal(tr.output, ref_out)
    assert torch.equal(tr.output, model(*args, **kw))

    # writing: edit every site; run_with_hooks with the same edits gives the same bits
    tr = trace(model, *args, **kw)
    for i, site in enumerate(tr):
        site.value = _edit(site.name, site.value, i)
    counter = iter(range(10**6))
    hooks = [(n, lambda a, hook: _edit(hook.name, a, next(counter))) for n in ref]
    expected = model.run_with_hooks(*args, fwd_hooks=hooks, **kw)
    assert torch.equal(tr.output, expected)
    assert not torch.equal(expected, ref_out)


@pytest.mark.parametrize("name", ["transformer-ln-gelu", "convnet"])
def test_trace_gradients_match_autograd(name):
    model, args, kw = ZOO[name]
    sites = list(cache(model, *args, **kw)[1])
    first, mid = sites[1], sites[len(sites) // 2]
    tr = trace(model, *args, **kw)
    kept = {}
    for site in tr:
        if site.name == first:
            kept["leaf"] = site.leaf()
        if site.name == mid:
            kept["mid"] = site.value
    loss = tr.output.pow(2).sum()
    g_leaf, g_mid = torch.autograd.grad(loss, [kept["leaf"], kept["mid"]])

    acts = {}

    def make_leaf(a, hook):
        acts["leaf"] = a.detach().requires_grad_(True)
        return acts["leaf"]

    def keep(a, hook):
        acts["mid"] = a

    out = model.run_with_hooks(*args, fwd_hooks=[(first, make_leaf), (mid, keep)], **kw)
    r_leaf, r_mid = torch.autograd.grad(out.pow(2).sum(), [acts["leaf"], acts["mid"]])
    assert torch.equal(g_leaf, r_leaf) and torch.equal(g_mid, r_mid)
    assert g_leaf.abs().sum() > 0


def test_masked_injection_and_names_filter():
    model, args, kw = ZOO["transformer"]
    site_name = "blocks.0.hook_resid_mid"
    mask = torch.zeros(6, 1, dtype=torch.bool)
    mask[2] = True
    value = torch.full((3, 6, 16), 5.0)
    tr = trace(model, *args, names=[site_name], **kw)
    for site in tr:
        assert site.name == site_name
        site.patch(value, mask)
    expected = run_with_patches(model, *args, patches={site_name: (value, mask)}, **kw)
    assert torch.equal(tr.output, expected)
    assert tr.names == [site_name]
    clean = model(*args)
    assert torch.equal(tr.output[:, :2], clean[:, :2])  # causal: earlier positions untouched
    assert not torch.allclose(tr.output[:, 2], clean[:, 2])


def test_masked_patch_shapes():
    a = torch.zeros(2, 3)
    assert masked_patch(a, torch.ones(3)).tolist() == [[1.0] * 3] * 2
    with pytest.raises(InterplabError, match="does not fit"):
        masked_patch(a, torch.ones(4), torch.ones(4, dtype=torch.bool))


def test_traces_cannot_interleave_but_can_follow_each_other():
    model, args, kw = ZOO["mlp"]
    with pytest.raises(InterplabError, match="cannot be interleaved"):
        for _ in trace(model, *args):
            for _ in trace(model, *args):
                pass
    it = iter(trace(model, *args))
    next(it)
    with pytest.raises(InterplabError, match="cannot be interleaved"):
        iter(trace(model, *args))
    it.close()
    tr = trace(model, *args)
    for site in tr:
        pass
    assert torch.equal(tr.output, model(*args))


def test_break_finishes_the_pass_and_errors_are_clear():
    model, args, kw = ZOO["mlp"]
    tr = trace(model, *args)
    with pytest.raises(InterplabError, match="has not finished"):
        tr.output
    for site in tr:
        if site.name == "layers.0.hook_post":
            site.value = torch.zeros_like(site.value)
            break
    expected = run_with_patches(model, *args, patches={"layers.0.hook_post": torch.zeros(4, 7)})
    assert torch.equal(tr.output, expected)
    with pytest.raises(InterplabError, match="only once"):
        iter(tr)
    with pytest.raises(InterplabError, match="no site named"):
        trace(model, *args, names=["nope"])
    for site in trace(model, *args):
        with pytest.raises(InterplabError, match="does not fit"):
            site.value = torch.zeros(1)
        break
    # an error inside the forward pass reaches the caller and leaves no trace in flight
    with pytest.raises(InterplabError, match="MLP input"):
        for _ in trace(model, torch.zeros(2, 9)):
            pass
    for _ in trace(model, *args):
        pass


def test_cache_sees_the_edits_of_its_hooks_and_makes_leaves_for_gradients():
    m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2), seed=0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    double = ("layers.0.hook_post", lambda act, hook: 2 * act)
    out, acts = cache(m, x, names="layers.0.hook_post", fwd_hooks=[double])
    _, plain = cache(m, x, names="layers.0.hook_post")
    assert torch.allclose(acts["layers.0.hook_post"], 2 * plain["layers.0.hook_post"])
    assert torch.allclose(out, m.run_with_hooks(x, fwd_hooks=[double]))
    # hook_input has no graph behind it: requires_grad makes it a leaf, and the gradient is W_in-shaped
    out, acts = cache(m, x, names="hook_input", requires_grad=True)
    (g,) = torch.autograd.grad(out[:, 1].sum(), acts["hook_input"])
    assert g.shape == x.shape and g.abs().sum() > 0
    with pytest.raises(InterplabError, match="no site named 'nope'"):
        cache(m, x, names=["nope"])


def test_batched_runs_match_one_pass_and_write_per_input_values():
    m = Transformer(TransformerConfig(d_vocab=7, n_ctx=4, d_model=8, n_heads=2, d_mlp=16), seed=0)
    toks = torch.randint(0, 7, (10, 4), generator=torch.Generator().manual_seed(1))
    site = "blocks.0.hook_resid_mid"
    full = site_values(m, toks, site, positions=[-1])
    assert torch.allclose(site_values(m, toks, site, batch_size=3, positions=[-1]), full)
    assert torch.equal(predict(m, toks, batch_size=3), default_readout(m(toks)))
    # writing each input's own value back changes nothing; writing another input's value does
    values = site_values(m, toks, site)
    same = predict(m, toks, batch_size=4, values={site: values})
    assert torch.equal(same, default_readout(m(toks)))
    swapped = torch.cat([out for _, out in run_batches(m, toks, 4, values={site: values.flip(0)})])
    assert torch.allclose(swapped, m.run_with_hooks(toks, fwd_hooks=[(site, lambda a, hook: values.flip(0))]))
    with pytest.raises(InterplabError, match="does not fit site"):
        predict(m, toks, values={site: values[:, :2]})


def test_site_reads_and_writes_rows():
    s = Site("blocks.0.mlp.hook_post", position=1)
    a = torch.arange(24.0).reshape(2, 3, 4)
    assert s.read(a).shape == (2, 4) and torch.equal(s.write(a, s.read(a)), a)
    assert Site("x").read(a).shape == (6, 4)
    with pytest.raises(InterplabError, match="no axis 1"):
        s.read(torch.zeros(2, 4))


def test_site_values_several_sites_and_one_position_per_input_across_batches():
    from interplab.instrument import gather_positions, site_values
    from interplab.models import Transformer, TransformerConfig

    m = Transformer(TransformerConfig(d_vocab=7, n_ctx=4, d_model=8, n_heads=2, d_mlp=16), seed=0)
    x = torch.randint(7, (5, 4), generator=torch.Generator().manual_seed(0))
    sites = ["blocks.0.hook_resid_post", "hook_embed"]
    pos = torch.tensor([3, 0, 1, 2, -1])
    several = site_values(m, x, sites, batch_size=2, position=pos)  # positions split with the batches
    assert list(several) == sites
    for s in sites:
        full = site_values(m, x, s)
        assert torch.equal(several[s], gather_positions(full, pos))
    assert torch.equal(site_values(m, x, sites, position=-1)["hook_embed"], site_values(m, x, "hook_embed")[:, -1])
    with pytest.raises(InterplabError, match="one position per input"):
        site_values(m, x, sites, position=[0, 1])
    with pytest.raises(InterplabError, match="Unknown activation site"):
        site_values(m, x, ["hook_embed", "nope"])
