"""Real LMs through TransformerLens 4's bridge: loading offline, and every analysis on a bridge model.

Three tiny random-weight checkpoints (GPT-2, GPT-NeoX with partial rotary and parallel
attention, Llama with rotary, RMSNorm and grouped-query attention) are made by the tests with
``transformers`` and a BPE tokenizer trained by ``tokenizers``; nothing is downloaded.
"""

from __future__ import annotations

import json
import operator
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lm_fixtures import FAMILIES, HF_PATHS, make_checkpoints  # noqa: E402

from interplab import lm  # noqa: E402
from interplab.errors import InterplabError  # noqa: E402
from interplab.instrument import cache  # noqa: E402
from interplab.interventions.attribution import agreement, atp_star  # noqa: E402
from interplab.interventions.patching import activation_patching  # noqa: E402

A, B = 5, 6  # the metric: logit of token A minus token B at the last position (invariant to centring)


def metric(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, A] - logits[:, -1, B]).mean()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("lms"))


@pytest.fixture(scope="session")
def bridges(checkpoints) -> dict[str, lm.LoadedLM]:
    return {f: lm.load(checkpoints[f], device="cpu") for f in FAMILIES}


@pytest.fixture(scope="session")
def hf_models(checkpoints) -> dict[str, torch.nn.Module]:
    from transformers import AutoModelForCausalLM

    return {f: AutoModelForCausalLM.from_pretrained(checkpoints[f], attn_implementation="eager").eval()
            for f in FAMILIES}


def pair(vocab: int, batch: int = 2, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (batch, n), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 1 + torch.randint(0, vocab - 2, (batch,), generator=g)) % vocab
    return clean, corrupted


# -- explicit patching on the Hugging Face model itself (no TransformerLens involved) ------------

def _hf_patched(hf, family: str, clean, corrupted, layer: int, kind: str, unit: int | None) -> float:
    """metric(HF model on ``corrupted`` with one component's clean value), by torch hooks on HF modules."""
    layers_path, o_path, mlp_path, down_path = HF_PATHS[family]
    block = operator.attrgetter(layers_path)(hf)[layer]
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    if kind == "z":  # the output projection's input is z with heads side by side
        module, sl = operator.attrgetter(o_path)(block), slice(unit * d_head, (unit + 1) * d_head)
    elif kind == "neuron":  # the MLP output projection's input holds the neurons' activations
        module, sl = operator.attrgetter(down_path)(block), slice(unit, unit + 1)
    else:
        module = operator.attrgetter(mlp_path)(block) if kind == "mlp_out" else block
    saved = {}

    def take(args, kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def put(args, kwargs, value):
        if args:
            return (value, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": value}

    def keep_output(m, args, out) -> None:
        saved["v"] = out

    def keep_input(m, args, kwargs) -> None:
        saved["v"] = take(args, kwargs)

    if kind == "mlp_out":
        h = module.register_forward_hook(keep_output)
    else:
        h = module.register_forward_pre_hook(keep_input, with_kwargs=True)
    with torch.no_grad():
        hf(clean)
    h.remove()
    clean_value = saved["v"]

    def patch_in(m, args, kwargs):
        x = take(args, kwargs).clone()
        if kind in ("z", "neuron"):
            x[..., sl] = clean_value[..., sl]
        else:  # resid_pre at one position
            x[:, unit] = clean_value[:, unit]
        return put(args, kwargs, x)

    if kind == "mlp_out":
        h = module.register_forward_hook(lambda m, a, out: clean_value)
    else:
        h = module.register_forward_pre_hook(patch_in, with_kwargs=True)
    with torch.no_grad():
        out = metric(hf(corrupted).logits).item()
    h.remove()
    return out


# -- loading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_loads_offline_with_transformerlens_names(bridges, hf_models, family) -> None:
    model, tok = bridges[family]
    ids = tok("Alice plays the sport of tennis.", return_tensors="pt").input_ids
    assert ids.shape[1] > 3 and tok.decode(ids[0], skip_special_tokens=True) == "Alice plays the sport of tennis."
    with torch.no_grad():
        ours = model(ids).log_softmax(-1)
        ref = hf_models[family](ids).logits.log_softmax(-1)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    for name in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z",
                 "blocks.1.hook_mlp_out", "blocks.0.mlp.hook_post", "ln_final.hook_scale"):
        assert name in model.hook_dict


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_returns_every_alias_asked_for(bridges, family) -> None:
    model, tok = bridges[family]
    x = torch.tensor([[1, 2, 3, 4]])
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_in", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]
    _, acts = cache(model, x, names=names)
    assert sorted(acts) == sorted(names)
    assert acts["blocks.0.hook_resid_pre"] is acts["blocks.0.hook_in"]
    _, every = cache(model, x)  # no filter: each hook point once, under all its names
    assert "blocks.1.hook_resid_pre" in every and torch.equal(every["blocks.1.hook_resid_pre"],
                                                              every["blocks.0.hook_resid_post"])


# -- activation patching against the explicit computation on the HF model ----------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_activation_patching_matches_explicit_hf_patching(bridges, hf_models, family) -> None:
    model, tok = bridges[family]
    hf = hf_models[family]
    clean, corrupted = pair(len(tok))
    grids = activation_patching(model, clean, corrupted, metric, ["z", "mlp_out"])
    resid = activation_patching(model, clean, corrupted, metric, "resid_pre", per_position=True)
    with torch.no_grad():
        base = metric(hf(corrupted).logits).item()
        total = metric(hf(clean).logits).item() - base
    for layer in range(2):
        for head in range(4):
            want = _hf_patched(hf, family, clean, corrupted, layer, "z", head) - base
            assert abs(grids["z"][layer, head].item() - want) < 1e-4, (layer, head)
        want = _hf_patched(hf, family, clean, corrupted, layer, "mlp_out", None) - base
        assert abs(grids["mlp_out"][layer].item() - want) < 1e-4
        for pos in range(clean.shape[1]):
            want = _hf_patched(hf, family, clean, corrupted, layer, "resid_pre", pos) - base
            assert abs(resid[layer, pos].item() - want) < 1e-4, (layer, pos)
        # all positions of a layer's input restored: the clean output
        assert abs(activation_patching(model, clean, corrupted, metric, "resid_pre")[layer].item() - total) < 1e-4
    assert resid.abs().max() > 0.05 and grids["z"].abs().max() > 0.01  # the effects are not all zero


@pytest.mark.parametrize("family", FAMILIES)
def test_every_node_kind_patches_on_a_bridge(bridges, hf_models, family) -> None:
    """Grids of every kind have the right shapes (grouped k/v heads for Llama); neurons match explicit
    patching of the HF model's MLP output projection input; a whole residual site restores the clean run."""
    from interplab.interventions.nodes import KINDS

    model, tok = bridges[family]
    hf = hf_models[family]
    clean, corrupted = pair(len(tok))
    kinds = [k for k in KINDS if k != "resid_mid" or "blocks.0.hook_resid_mid" in model.hook_dict]  # NeoX: none
    grids = activation_patching(model, clean, corrupted, metric, kinds)
    n_kv, d_mlp = model.cfg.n_key_value_heads or 4, model.cfg.d_mlp
    shapes = {"resid_pre": (2,), "resid_mid": (2,), "resid_post": (2,), "attn_out": (2,), "mlp_out": (2,),
              "z": (2, 4), "q": (2, 4), "k": (2, n_kv), "v": (2, n_kv), "pattern": (2, 4), "neuron": (2, d_mlp)}
    assert {k: tuple(g.shape) for k, g in grids.items()} == {k: shapes[k] for k in kinds}
    with torch.no_grad():
        total = (metric(model(clean)) - metric(model(corrupted))).item()
        base = metric(hf(corrupted).logits).item()
    for kind in ("resid_pre", "resid_mid", "resid_post"):
        if kind in grids:
            assert torch.allclose(grids[kind], torch.full((2,), total), atol=1e-4), kind
    neurons = grids["neuron"]
    for layer in range(2):
        for unit in neurons[layer].abs().topk(3).indices.tolist() + [0]:
            want = _hf_patched(hf, family, clean, corrupted, layer, "neuron", unit) - base
            assert abs(neurons[layer, unit].item() - want) < 1e-4, (layer, unit)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_resid_mid_patching_reaches_the_skip_connection(bridges, family) -> None:
    """A bridge's hook_resid_mid is the MLP norm's input; patching it must change the skip path too."""
    model, tok = bridges[family]
    clean, corrupted = pair(len(tok))
    grid = activation_patching(model, clean, corrupted, metric, "resid_mid")
    with torch.no_grad():
        total = (metric(model(clean)) - metric(model(corrupted))).item()
    assert torch.allclose(grid, torch.full_like(grid, total), atol=1e-4)


# -- AtP* against exhaustive patching ----------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_atp_star_attention_step_reproduces_patched_patterns(bridges, family) -> None:
    """AtP*'s exact softmax for q and k nodes (rotary, grouped heads, scale) equals the bridge's own
    pattern when the clean q or k is patched in."""
    from interplab.interventions.attribution import _qk, _scale

    model, tok = bridges[family]
    clean, corrupted = pair(len(tok))
    for layer in range(2):
        p = f"blocks.{layer}.attn."
        sites = sorted({p + "hook_q", p + "hook_k", p + "hook_attn_scores", p + "hook_pattern"}
                       | {p + h for h in ("hook_cos", "hook_sin") if p + h in model.hook_dict})
        with torch.no_grad():
            _, cc = cache(model, clean, names=sites)
            _, cx = cache(model, corrupted, names=sites)
            for which in ("q", "k"):
                patched = {p + "hook_q": cx[p + "hook_q"], p + "hook_k": cx[p + "hook_k"], **cx}
                patched[p + f"hook_{which}"] = cc[p + f"hook_{which}"]
                s = torch.einsum("bqhd,bkhd->bhqk", _qk(model, patched, layer, "q", cx),
                                 _qk(model, patched, layer, "k", cx)) * _scale(model, layer)
                s = s.masked_fill(torch.isinf(cx[p + "hook_attn_scores"]), float("-inf"))
                real = {}

                def grab(a, hook):
                    real["pattern"] = a

                model.run_with_hooks(corrupted, fwd_hooks=[(p + f"hook_{which}", lambda a, hook, v=cc[p + f"hook_{which}"]: v),
                                                           (p + "hook_pattern", grab)])
                assert torch.allclose(s.softmax(-1), real["pattern"], atol=1e-5), (family, layer, which)
                assert (s.softmax(-1) - cx[p + "hook_pattern"]).abs().max() > 1e-3  # the patch changes the pattern


ATP_RECALL = {"gpt2": 0.6, "neox": 0.6, "llama": 0.6}  # recall of the top 5 by |effect|, all three kinds


@pytest.mark.parametrize("family", FAMILIES)
def test_atp_star_agrees_with_exhaustive_patching(bridges, family) -> None:
    model, tok = bridges[family]
    clean, corrupted = pair(len(tok))
    per_pos = True
    true = {"z": activation_patching(model, clean, corrupted, metric, "z", per_position=True),
            "mlp_out": activation_patching(model, clean, corrupted, metric, "mlp_out", per_position=True),
            "resid_pre": activation_patching(model, clean, corrupted, metric, "resid_pre", per_position=per_pos)}
    est = {"z": atp_star(model, clean, corrupted, metric, "z", per_position=True),
           "mlp_out": atp_star(model, clean, corrupted, metric, "mlp_out", per_position=True),
           "resid_pre": atp_star(model, clean, corrupted, metric, "resid_pre", per_position=per_pos)}
    a = agreement(true, est, k=5)
    print(family, "resid_pre+z+mlp_out", a)
    assert a["recall"] >= ATP_RECALL[family] and a["spearman"] >= 0.8, a
    # queries and keys (AtP*'s exact softmax; Llama's keys are grouped: one node per key/value head)
    true_qk = activation_patching(model, clean, corrupted, metric, ["q", "k"], per_position=True)
    est_qk = atp_star(model, clean, corrupted, metric, ["q", "k"], per_position=True)
    assert est_qk["k"].shape == true_qk["k"].shape == (2, model.cfg.n_key_value_heads or 4, clean.shape[1])
    b = agreement(true_qk, est_qk, k=5)
    print(family, "q+k", b)
    assert b["recall"] >= 0.6 and b["spearman"] >= 0.8, b
    for kind in ("z", "mlp_out"):
        assert est[kind].shape == true[kind].shape


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_atp_star_skip_term_is_every_path_but_attention(bridges, family) -> None:
    """The linear part AtP* keeps for per-position resid_pre nodes equals ``delta . grad`` with the
    attention's input cut out of the backward pass (sequential GPT-2 and parallel NeoX blocks)."""
    from interplab.interventions.attribution import _corrupted_grads, _skip_site, _skip_term

    model, tok = bridges[family]
    clean, corrupted = pair(len(tok))
    for layer in range(2):
        site = f"blocks.{layer}.hook_resid_pre"
        with torch.no_grad():
            _, cc = cache(model, clean, names=site)
        corr, grads = _corrupted_grads(model, corrupted, metric, sorted({site, _skip_site(model, layer)}), {})
        delta = cc[site] - corr[site]
        ours = _skip_term(model, layer, site, delta, corr, grads)
        acts = {}

        def keep(a, hook):
            acts["x"] = a
            return a

        with torch.enable_grad():
            out = model.run_with_hooks(corrupted, fwd_hooks=[(site, keep),
                                                             (f"blocks.{layer}.ln1.hook_out", lambda a, hook: a.detach())])
            (g,) = torch.autograd.grad(metric(out), acts["x"])
        want = (delta * g).sum((0, 2))
        assert torch.allclose(ours, want, atol=1e-5), (layer, ours, want)
        assert want.abs().max() > 1e-3


# -- errors: one sentence ----------------------------------------------------------------------

def test_missing_directory(tmp_path) -> None:
    with pytest.raises(InterplabError, match="does not exist"):
        lm.load(tmp_path / "nowhere")


def test_corrupt_config(tmp_path, checkpoints) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], ')
    with pytest.raises(InterplabError, match="not valid JSON"):
        lm.load(bad)
    (bad / "config.json").write_text("[1, 2]")
    with pytest.raises(InterplabError, match="not a JSON object"):
        lm.load(bad)


def test_unknown_architecture(tmp_path, checkpoints) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((checkpoints["gpt2"] / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "architectures": ["MadeUpForCausalLM"]}))
    with pytest.raises(InterplabError, match="MadeUpForCausalLM is not one TransformerLens can load"):
        lm.load(odd)
    (odd / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(InterplabError, match="causal language model"):
        lm.load(odd)


def test_too_large_for_the_device(checkpoints, hf_models) -> None:
    from interplab.lm.load import count_parameters

    with pytest.raises(InterplabError, match=r"needs about .* but only .* is free on cpu"):
        lm.load(checkpoints["llama"], device="cpu", available=1000)
    # exact from the safetensors header; estimated from the config when there are no weights
    assert count_parameters(checkpoints["llama"], {}) == sum(p.numel() for p in hf_models["llama"].parameters())
    big = {"hidden_size": 16384, "num_hidden_layers": 120, "vocab_size": 128000, "intermediate_size": 53248,
           "hidden_act": "silu"}
    assert count_parameters("/nonexistent", big) == 120 * (4 * 16384**2 + 3 * 16384 * 53248) + 128000 * 16384


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI's entry point in this process (as `interplab ARGS`): exit code, stdout, stderr."""
    from interplab import cli

    monkeypatch.setattr(sys, "argv", ["interplab", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    out = capsys.readouterr()
    return stop.value.code or 0, out.out, out.err


def test_cli_errors_exit_2(tmp_path, checkpoints, monkeypatch, capsys) -> None:
    def one_sentence(fragment: str, *args: str) -> None:
        code, _, err = _main(monkeypatch, capsys, "lm-info", *args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err

    one_sentence("does not exist", "--model", str(tmp_path / "nowhere"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{")
    one_sentence("not valid JSON", "--model", str(bad))
    config = json.loads((checkpoints["gpt2"] / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "architectures": ["MadeUpForCausalLM"]}))
    one_sentence("MadeUpForCausalLM", "--model", str(bad))
    code, out, err = _main(monkeypatch, capsys, "lm-info", "--model", str(checkpoints["llama"]), "--device", "cpu")
    assert code == 0 and "LlamaForCausalLM" in out and "layers 2" in out, err


# -- path patching, direct logit attribution -----------------------------------------------------

def _run_capture(model, x, hooks, name):
    got = {}

    def grab(a, hook):
        got["v"] = a

    with torch.no_grad():
        out = model.run_with_hooks(x, fwd_hooks=[*hooks, (name, grab)])
    return out, got["v"]


@pytest.mark.parametrize("family", FAMILIES)
def test_path_patching_matches_explicit_runs(bridges, family) -> None:
    """The receiver's input recomputed by path patching (norm, W_Q/W_K/W_V, biases, grouped heads) equals
    what the bridge itself computes when only the sender's clean-minus-corrupted output is added."""
    from interplab.interventions.patching import path_patching

    model, tok = bridges[family]
    clean, corrupted = pair(len(tok))
    head = 1
    with torch.no_grad():
        base = metric(model(corrupted)).item()
        _, z_clean = _run_capture(model, clean, [], "blocks.0.attn.hook_z")
        _, attn_x = _run_capture(model, corrupted, [], "blocks.0.hook_attn_out")

        def put_head(a, hook):
            a = a.clone()
            a[:, :, head] = z_clean[:, :, head]
            return a

        _, attn_p = _run_capture(model, corrupted, [("blocks.0.attn.hook_z", put_head)], "blocks.0.hook_attn_out")
        delta = attn_p - attn_x  # the sender's clean-minus-corrupted output, as the model writes it
    for which, r_head in (("q", 3), ("k", 1), ("v", 0)):
        site = f"blocks.1.attn.hook_{which}"
        _, new = _run_capture(model, corrupted, [("blocks.1.hook_resid_pre", lambda a, hook: a + delta)], site)

        def put(a, hook, new=new, r=r_head):
            a = a.clone()
            a[:, :, r] = new[:, :, r]
            return a

        with torch.no_grad():
            want = metric(model.run_with_hooks(corrupted, fwd_hooks=[(site, put)])).item() - base
        got = path_patching(model, clean, corrupted, metric, (0, head), [(1, r_head, which)]).item()
        assert abs(got - want) < 1e-4, (which, got, want)
    with torch.no_grad():
        want = metric(model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.hook_resid_post",
                                                                   lambda a, hook: a + delta)])).item() - base
    assert abs(path_patching(model, clean, corrupted, metric, (0, head), ["logits"]).item() - want) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_logit_attribution_adds_up_to_each_sublayer(bridges, family) -> None:
    """Per head (and per neuron), plus the sublayer's bias, DLA sums to the sublayer output's direct
    effect through the frozen final norm (centred for LayerNorm, not for RMSNorm)."""
    from interplab.interventions.attribution import direct_logit_attribution

    model, tok = bridges[family]
    x, _ = pair(len(tok))
    d = torch.zeros(len(tok))
    d[A], d[B] = 1.0, -1.0
    heads = direct_logit_attribution(model, x, d, kind="head")
    neurons = direct_logit_attribution(model, x, d, kind="neuron")
    names = ["ln_final.hook_scale"] + [f"blocks.{l}.hook_{s}_out" for l in range(2) for s in ("attn", "mlp")]
    with torch.no_grad():
        _, acts = cache(model, x, names=names)
    rms = model.cfg.normalization_type.startswith("RMS")

    def direct(v: torch.Tensor) -> torch.Tensor:
        v = v if rms else v - v.mean(-1, keepdim=True)
        return (v / acts["ln_final.hook_scale"]) @ (model.W_U @ d)

    for layer in range(2):
        block = model.blocks[layer]
        for dla, out, bias in ((heads, "attn", getattr(block.attn, "b_O", None)),
                               (neurons, "mlp", getattr(block.mlp, "b_out", None))):
            want = direct(acts[f"blocks.{layer}.hook_{out}_out"])
            if bias is not None:
                want = want - direct(bias.expand_as(acts[f"blocks.{layer}.hook_{out}_out"]))
            assert torch.allclose(dla[:, :, layer].sum(-1), want, atol=1e-4), (layer, out)
    assert heads.abs().max() > 1e-3


# -- ablation, scrubbing, SAE training on a bridge site ---------------------------------------------

@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ablation_and_scrubbing_on_a_bridge(bridges, family) -> None:
    from interplab.interventions.ablate import ablate
    from interplab.interventions.scrub import Group, Hypothesis, scrub

    model, tok = bridges[family]
    x = torch.randint(1, len(tok), (12, 6), generator=torch.Generator().manual_seed(3))
    perm = torch.roll(torch.arange(12), 1)
    with torch.no_grad():
        # the whole residual stream before layer 1 taken from another input: that input's output
        out = ablate(model, x, "blocks.1.hook_resid_pre", "resample", sources=perm)
        assert torch.allclose(out, model(x[perm]), atol=1e-5)
        zeroed = ablate(model, x, "blocks.1.hook_mlp_out", "zero")
        _, acts = cache(model, x, names=["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"])
    resid = acts["blocks.1.hook_resid_post"] - acts["blocks.1.hook_mlp_out"]  # the stream without that MLP
    assert torch.allclose(zeroed, model.unembed(model.ln_final(resid)), atol=1e-4)
    d = model.cfg.d_model
    keep = scrub(model, Hypothesis("blocks.1.hook_resid_pre", (Group(range(d), "keep"),)), x, n_draws=2)
    free = scrub(model, Hypothesis("blocks.1.hook_resid_pre", ()), x, n_draws=2)
    assert keep.agree == 1.0 and free.agree < 1.0


def test_sae_trains_on_a_bridge_site(bridges, tmp_path) -> None:
    from interplab.instrument import Site
    from interplab.sae.buffer import collect, sample_rows
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import SAETrainConfig, make_buffer, train_sae

    model, tok = bridges["llama"]
    tokens = torch.randint(1, len(tok), (64, 8), generator=torch.Generator().manual_seed(0))
    site = Site("blocks.0.hook_resid_pre")
    rows = collect(model, site, tokens[:2])
    with torch.no_grad():
        _, acts = cache(model, tokens[:2], names=site.name)
    assert torch.equal(rows, acts[site.name].reshape(-1, model.cfg.d_model))
    cfg = SAETrainConfig(steps=40, batch_size=32, buffer_size=256, log_every=20)
    buf = make_buffer(model, site, sample_rows(tokens), cfg)
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=64, hook_name=site.name))
    result = train_sae(sae, buf, cfg, tmp_path / "sae", quiet=True)
    assert result.metrics[-1]["mse"] < result.metrics[0]["mse"]


def test_run_with_patches_writes_resid_mid_on_both_paths(bridges) -> None:
    from interplab.instrument import run_with_patches

    model, tok = bridges["gpt2"]
    clean, corrupted = pair(len(tok))
    with torch.no_grad():
        _, acts = cache(model, clean, names="blocks.1.hook_resid_mid")
        out = run_with_patches(model, corrupted, patches={"blocks.1.hook_resid_mid": acts["blocks.1.hook_resid_mid"]})
        assert torch.allclose(out, model(clean), atol=1e-5)


def test_ablation_writes_resid_mid_on_both_paths(bridges) -> None:
    from interplab.interventions.ablate import ablate

    model, tok = bridges["llama"]
    x = torch.randint(1, len(tok), (12, 6), generator=torch.Generator().manual_seed(4))
    perm = torch.roll(torch.arange(12), 1)
    with torch.no_grad():  # the whole stream before layer 1's MLP from another input: that input's output
        assert torch.allclose(ablate(model, x, "blocks.1.hook_resid_mid", "resample", sources=perm),
                              model(x[perm]), atol=1e-5)


def test_atp_star_refuses_when_it_cannot_reproduce_the_attention_scores(bridges, monkeypatch) -> None:
    model, tok = bridges["gpt2"]
    clean, corrupted = pair(len(tok))
    monkeypatch.setattr(model.cfg, "use_attn_scale", False)  # AtP* would now compute q . k unscaled
    with pytest.raises(InterplabError, match="cannot reproduce layer 0's attention scores"):
        atp_star(model, clean, corrupted, metric, "k")


def test_trace_visits_each_bridge_hook_point_once_by_its_transformerlens_name(bridges) -> None:
    from interplab.instrument import trace

    model, tok = bridges["llama"]
    x = torch.tensor([[1, 2, 3, 4, 5]])
    tr = trace(model, x)
    for site in tr:
        if site.name == "blocks.1.attn.hook_z":
            site.value = torch.zeros_like(site.value)
    assert len(tr.names) == len(set(tr.names)) and "blocks.0.hook_resid_pre" in tr.names
    assert "blocks.0.hook_in" not in tr.names and "blocks.0.attn.o.hook_in" not in tr.names
    with torch.no_grad():
        want = model.run_with_hooks(x, fwd_hooks=[("blocks.1.attn.hook_z", lambda a, hook: torch.zeros_like(a))])
    assert torch.allclose(tr.output, want, atol=1e-6)


# -- the edge graph of circuit discovery on a bridge ------------------------------------------

def _gpt2_edge_patched(hf, clean, corrupted, sender_head: int, receiver: str) -> torch.Tensor:
    """Log-probabilities of the HF GPT-2 model on ``clean`` when one receiver of layer 1 (head 0's key, or
    the MLP) sees layer-0 head ``sender_head``'s corrupted output in place of its clean one: torch hooks on
    the HF modules, no TransformerLens involved."""
    blk0, blk1 = hf.transformer.h[0], hf.transformer.h[1]
    d = hf.config.hidden_size
    dh = d // hf.config.num_attention_heads
    rows = slice(sender_head * dh, (sender_head + 1) * dh)
    saved: dict[str, torch.Tensor] = {}

    def run(tokens, extra=()):
        hs = [blk0.attn.c_proj.register_forward_pre_hook(lambda m, a: saved.__setitem__("z", a[0])),
              blk1.ln_1.register_forward_pre_hook(lambda m, a: saved.__setitem__("pre", a[0])),
              blk1.ln_2.register_forward_pre_hook(lambda m, a: saved.__setitem__("mid", a[0]))]
        hs += [make() for make in extra]
        with torch.no_grad():
            out = hf(tokens).logits
        for h in hs:
            h.remove()
        return out, dict(saved)

    _, c = run(clean)
    _, x = run(corrupted)
    head = lambda z: z[..., rows] @ blk0.attn.c_proj.weight[rows]  # noqa: E731  the head's output (Conv1D: [in, out])
    if receiver == "k":  # head 0's key from the residual stream with the sender's output swapped
        with torch.no_grad():
            key = blk1.attn.c_attn(blk1.ln_1(c["pre"] - head(c["z"]) + head(x["z"])))[..., d:d + dh]

        def put(m, a, out):
            out = out.clone()
            out[..., d:d + dh] = key
            return out

        make = lambda: blk1.attn.c_attn.register_forward_hook(put)  # noqa: E731
    else:  # the MLP's input only (the skip connection keeps the clean stream)
        with torch.no_grad():
            mlp_in = blk1.ln_2(c["mid"] - head(c["z"]) + head(x["z"]))
        make = lambda: blk1.mlp.register_forward_pre_hook(lambda m, a: (mlp_in,))  # noqa: E731
    return run(clean, [make])[0].log_softmax(-1)


def test_edge_patching_on_a_bridge_matches_explicit_hf_patching(bridges, hf_models) -> None:
    from interplab.interventions.circuits import eap
    from interplab.interventions.edges import Graph, run_edges, sender_outputs

    model, tok = bridges["gpt2"]
    hf = hf_models["gpt2"]
    clean, _ = pair(len(tok), batch=3)
    corrupted = torch.randint(1, len(tok), clean.shape, generator=torch.Generator().manual_seed(5))
    g = Graph.from_model(model)
    assert g.n_edges == 12 * 1 + 5 + 12 * 6 + 10 + 11  # q/k/v and MLP inputs of layers 0 and 1, logits
    corr = sender_outputs(model, g, corrupted)
    with torch.no_grad():
        clean_lp = model(clean).log_softmax(-1)
        for sender, receiver, name in ((1, "k", "a0.h1->a1.h0.k"), (2, "mlp", "a0.h2->m1")):
            got = run_edges(model, g, clean, corr, g.edge_set([name]).float()).log_softmax(-1)
            want = _gpt2_edge_patched(hf, clean, corrupted, sender, receiver)
            assert (want - clean_lp).abs().max() > 1e-2, name  # the edge matters
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(run_edges(model, g, clean, corr, g.mask(1.0)), model(corrupted), atol=1e-4, rtol=1e-4)
    # EAP's gradients flow through the bridge's hooks: each score is the slope of the patched metric
    scores = eap(model, g, clean, corr, metric)
    with torch.no_grad():
        for name in ("a0.h1->a1.h0.k", "embed->a0.h3.v", "a0.h2->m1", "m0->logits"):
            mask = g.edge_set([name]).float()
            slope = (metric(run_edges(model, g, clean, corr, 1e-2 * mask)) -
                     metric(run_edges(model, g, clean, corr, -1e-2 * mask))) / 2e-2
            assert abs(float(scores[mask.bool()]) - float(slope)) < 1e-2 * max(1.0, abs(float(slope))), name


@pytest.mark.parametrize("family", ["neox", "llama"])
def test_edge_graph_refuses_parallel_blocks_and_grouped_heads(bridges, family) -> None:
    from interplab.interventions.edges import Graph

    with pytest.raises(InterplabError, match="parallel|groups"):
        Graph.from_model(bridges[family].model)
