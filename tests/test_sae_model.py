"""The SAE module: decoder norm invariants, gradient projection, top-k readout, SAELens interchange."""

import json
from pathlib import Path

import pytest
import torch

from interplab.errors import InterplabError
from interplab.sae.model import SAE, SAEConfig
from interplab.sae.saelens import load_saelens, save_saelens

DATA = Path(__file__).parent / "data"


def test_training_step_keeps_decoder_rows_unit_norm_and_reduces_loss():
    g = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig(d_in=10, d_sae=30), seed=0)
    x = torch.randn(256, 10, generator=g)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2, betas=(0.0, 0.999))
    first = None
    for _ in range(100):
        out = sae.loss(x, l1_coeff=1e-3)
        first = first if first is not None else out.mse.item()
        opt.zero_grad()
        out.loss.backward()
        sae.project_decoder_grad()
        # the projected gradient is orthogonal to every decoder row
        assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-5
        opt.step()
        sae.normalize_decoder()
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    assert out.mse.item() < 0.5 * first


def test_loss_matches_its_definition():
    sae = SAE(SAEConfig(d_in=4, d_sae=6), seed=2)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
        sae.b_dec.fill_(-0.2)
    x = torch.randn(8, 4)
    f = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    x_hat = f @ sae.W_dec + sae.b_dec
    want = ((x - x_hat) ** 2).sum(-1).mean() + 0.3 * f.abs().sum(-1).mean()
    assert torch.allclose(sae.loss(x, 0.3).loss, want)


def test_topk_keeps_the_largest_activations():
    sae = SAE(SAEConfig(d_in=5, d_sae=20), seed=1)
    x = torch.randn(7, 5)
    full, top = sae.encode(x), sae.encode(x, k=3)
    assert ((top > 0).sum(-1) <= 3).all()
    kept = top.sort(dim=-1, descending=True).values[:, :3]
    assert torch.allclose(kept, full.sort(dim=-1, descending=True).values[:, :3])


def test_wrong_input_width_is_one_sentence():
    with pytest.raises(InterplabError, match="d_in=4"):
        SAE(SAEConfig(d_in=4, d_sae=8)).encode(torch.zeros(2, 5))


def test_saelens_roundtrip_keeps_function_and_site(tmp_path):
    sae = SAE(SAEConfig(d_in=6, d_sae=12, hook_name="blocks.0.hook_resid_post", position=2), seed=4)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.3)
    save_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["apply_b_dec_to_input"] is True
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    back = load_saelens(tmp_path)
    x = torch.randn(9, 6)
    assert back.cfg == sae.cfg
    assert torch.equal(back(x), sae(x))


@pytest.mark.parametrize("name", ["saelens_standard", "saelens_no_bdec_input"])
def test_loads_directories_written_by_saelens(name):
    # written by sae-lens 6.54.12 itself (tools/saelens_fixture.py), with non-unit decoder norms
    sae = load_saelens(DATA / name)
    expected = json.loads((DATA / name / "expected.json").read_text())
    x = torch.tensor(expected["x"])
    assert torch.allclose(sae(x), torch.tensor(expected["x_hat"]), atol=1e-5)
    assert torch.equal(sae.encode(x) > 0, torch.tensor(expected["f"]) > 0)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(10), atol=1e-6)
    assert sae.cfg.hook_name == "blocks.0.mlp.hook_post"


def test_load_refuses_other_architectures(tmp_path):
    sae = SAE(SAEConfig(d_in=3, d_sae=4))
    save_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InterplabError, match="gated"):
        load_saelens(tmp_path)
    with pytest.raises(InterplabError, match="does not exist"):
        load_saelens(tmp_path / "nope")


def _write_saelens_dir(path, cfg, tensors):
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_loads_saelens_topk_and_jumprelu(tmp_path, arch, apply_b_dec):
    # a directory in the SAELens 6 layout, non-unit decoder norms; expected outputs from the
    # formulas of SAELens's TopKSAE / JumpReLUSAE written out with plain tensors
    g = torch.Generator().manual_seed(0)
    d_in, d_sae = 6, 10
    t = {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": torch.randn(d_sae, d_in, generator=g) * 2,
         "b_enc": torch.randn(d_sae, generator=g) * 0.1, "b_dec": torch.randn(d_in, generator=g) * 0.1}
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": apply_b_dec,
           "normalize_activations": "none", "architecture": arch,
           "metadata": {"sae_lens_version": "6.12.0", "hook_name": "blocks.1.hook_resid_post"}}
    if arch == "topk":
        cfg["k"] = 3
    else:
        t["threshold"] = torch.rand(d_sae, generator=g)
    _write_saelens_dir(tmp_path, cfg, t)
    x = torch.randn(20, d_in, generator=g)
    pre = (x - t["b_dec"] * apply_b_dec) @ t["W_enc"] + t["b_enc"]
    if arch == "topk":
        top = pre.topk(3, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:
        f = torch.relu(pre) * (pre > t["threshold"])
    x_hat = f @ t["W_dec"] + t["b_dec"]
    sae = load_saelens(tmp_path)
    assert sae.cfg.architecture == arch and sae.cfg.apply_b_dec_to_input == apply_b_dec
    assert torch.allclose(sae(x), x_hat, atol=1e-5)
    assert torch.equal(sae.encode(x) > 0, f > 0)
    save_saelens(sae, tmp_path / "again")  # and back out, the same function
    assert torch.allclose(load_saelens(tmp_path / "again")(x), x_hat, atol=1e-5)


def test_act_scale_is_folded_for_saelens_and_restored(tmp_path):
    sae = SAE(SAEConfig(d_in=5, d_sae=8, act_scale=0.25), seed=1)
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.5)
        sae.b_enc.normal_(0, 0.2)
    save_saelens(sae, tmp_path)
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "sae_weights.safetensors"))
    x = torch.randn(7, 5) * 4
    plain = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) @ w["W_dec"] + w["b_dec"]  # what SAELens computes
    assert torch.allclose(plain, sae.reconstruct(x), atol=1e-5)
    back = load_saelens(tmp_path)
    assert back.cfg == sae.cfg and torch.allclose(back.reconstruct(x), sae.reconstruct(x), atol=1e-5)
