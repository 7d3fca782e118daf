"""Every entry point runs where the model lives: each available device, and float64/bfloat16 on the CPU.

The cases are (device, dtype) pairs: CPU in float32, float64 and bfloat16 always run; CUDA
(float32, bfloat16) and MPS (float32) are skipped, with the reason shown, on a machine
without them. Each test builds a tiny model, moves it to the case's device and dtype, runs
the entry point on inputs left on the CPU (the library moves them), and checks that the
numbers are finite and that parameters and results stay on the device and in the dtype.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from interplab.devices import cuda_available, mps_available, resolve_device
from interplab.errors import InterplabError

CASES = [
    pytest.param("cpu", torch.float32, id="cpu-float32"),
    pytest.param("cpu", torch.float64, id="cpu-float64"),
    pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
    pytest.param("cuda", torch.float32, id="cuda-float32",
                 marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU on this machine")),
    pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16",
                 marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU on this machine")),
    pytest.param("mps", torch.float32, id="mps-float32",
                 marks=pytest.mark.skipif(not mps_available(), reason="no MPS device on this machine")),
]
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU on this machine")),
    pytest.param("mps", id="mps", marks=pytest.mark.skipif(not mps_available(), reason="no MPS device on this machine")),
]


@pytest.fixture(autouse=True)
def _no_device_mixing(request, monkeypatch):
    """Study paths run on the CPU under the device-mixing detector (tests/device_mix.py): an op that
    mixes the model's device with host tensors fails here as it would on a GPU."""
    params = getattr(request.node, "callspec", None)
    params = params.params if params is not None else {}
    if "study" in request.node.name or "circuit_discovery" in request.node.name:
        if params.get("device") == "cpu":
            from device_mix import detect_device_mixing

            with detect_device_mixing(monkeypatch):
                yield
            return
    yield


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _where(model: torch.nn.Module, device: str, dtype: torch.dtype) -> None:
    for name, p in model.named_parameters():
        assert p.device.type == device and p.dtype == dtype, f"{name} is {p.dtype} on {p.device}"


def _tiny_transformer(device: str, dtype: torch.dtype, **kw):
    from interplab.models import Transformer, TransformerConfig

    cfg = dict(d_vocab=7, n_ctx=5, d_model=16, n_layers=2, n_heads=2, d_mlp=12, bias=False)
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg), seed=3).to(device=resolve_device(device), dtype=dtype)


def _pair(n=6):
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(7, (n, 5), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1:3] = torch.randint(7, (n, 2), generator=g)
    return clean, corrupt


def _metric(logits):
    return logits[:, -1, 2].mean() - logits[:, -1, 3].mean()


# -- training -------------------------------------------------------------------------------

@pytest.mark.parametrize("device,dtype", CASES)
def test_train_transformer_records_placement_and_loads_back(device, dtype, tmp_path):
    from interplab.models import Transformer
    from interplab.runs import load
    from interplab.tasks.modular import modular_task
    from interplab.train import TrainConfig, train

    task = modular_task(p=5, frac_train=0.6, seed=0)
    cfg = dataclasses.replace(task.default_model_config(), d_model=16, n_heads=2, d_mlp=16)
    model = Transformer(cfg, seed=0).to(resolve_device(device), dtype)
    result = train(model, task, TrainConfig(epochs=4, batch_size=8, log_every=2, checkpoint_every=2), tmp_path / "r",
                   quiet=True)
    _where(model, device, dtype)
    assert len(result.metrics) == 3 and all(torch.isfinite(torch.tensor(m["train_loss"])) for m in result.metrics)
    placement = json.loads((tmp_path / "r" / "config.json").read_text())["placement"]
    assert placement["dtype"] == str(dtype).removeprefix("torch.") and placement["device"].startswith(device)
    back = load(tmp_path / "r", device="cpu")  # trained anywhere, loads on the CPU in its stored dtype
    assert next(back.parameters()).device.type == "cpu" and next(back.parameters()).dtype == dtype
    for (name, p), q in zip(model.named_parameters(), back.parameters()):
        assert torch.equal(p.detach().cpu(), q.detach()), name
    assert task.inputs.device.type == "cpu"  # train moved a copy of the task, not the caller's


@pytest.mark.parametrize("device,dtype", CASES)
def test_train_mlp_and_convnet_in_the_model_dtype(device, dtype):
    from interplab.models import MLP, ConvNet, ConvNetConfig, MLPConfig
    from interplab.tasks.memorization import memorization_task
    from interplab.train import TrainConfig, train

    task = memorization_task(n=4, n_classes=3, seed=0)
    mlp = MLP(MLPConfig(d_in=task.inputs.shape[1], d_hidden=(8,), d_out=3), seed=0).to(resolve_device(device), dtype)
    result = train(mlp, task, TrainConfig(epochs=3, log_every=1, lr=1e-2, weight_decay=0.0), quiet=True)
    _where(mlp, device, dtype)
    assert result.final["train_acc"] >= 0 and torch.isfinite(torch.tensor(result.final["train_loss"]))
    net = ConvNet(ConvNetConfig(channels1=2, channels2=2, d_fc=4), seed=0).to(resolve_device(device), dtype)
    out = net(torch.rand(3, 28, 28, generator=_gen()))  # float32 pixels on the CPU, whatever the model's place
    assert out.dtype == dtype and out.device.type == device and bool(torch.isfinite(out.float()).all())


@pytest.mark.parametrize("device,dtype", CASES)
def test_train_toy_model_of_superposition(device, dtype):
    from interplab.models import TMSConfig, ToyModelOfSuperposition
    from interplab.tasks.superposition import SparseFeatures
    from interplab.train import TrainConfig, train

    obj = SparseFeatures(n_instances=2, n_features=5, sparsity=0.7, eval_batch=64, steps_per_epoch=2)
    model = ToyModelOfSuperposition(TMSConfig(n_instances=2, n_features=5, n_hidden=2)).to(resolve_device(device), dtype)
    result = train(model, obj, TrainConfig(epochs=3, batch_size=32, lr=1e-2, weight_decay=0.0, log_every=1), quiet=True)
    _where(model, device, dtype)
    assert result.final["train_loss"] > 0


# -- SAEs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dead_fix", ["none", "resample", "ghost-original", "ghost-scaled", "ghost-dead-only"])
@pytest.mark.parametrize("device,dtype", CASES)
def test_train_sae_with_each_dead_fix(device, dtype, dead_fix, tmp_path):
    from interplab.instrument import Site
    from interplab.models import MLP, MLPConfig
    from interplab.sae.buffer import sample_rows
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import SAETrainConfig, make_buffer, train_sae

    dev = resolve_device(device)
    model = MLP(MLPConfig(d_in=6, d_hidden=(12,), d_out=2), seed=0).to(dev, dtype)
    cfg = SAETrainConfig(steps=8, batch_size=16, buffer_size=64, model_batch=32, log_every=4, dead_fix=dead_fix,
                         dead_window=2, resample_every=4, resample_rows=32, checkpoint_every=4)
    buf = make_buffer(model, Site("layers.0.hook_post"), sample_rows(torch.randn(200, 6, generator=_gen())), cfg)
    sae = SAE(SAEConfig(d_in=12, d_sae=48, hook_name="layers.0.hook_post"), seed=0).to(dev, dtype)
    result = train_sae(sae, buf, cfg, tmp_path / "sae", quiet=True)
    _where(sae, device, dtype)
    assert buf.rows.device.type == device
    final = result.final
    assert final["step"] == 8 and all(torch.isfinite(torch.tensor(final[k])) for k in ("loss", "mse", "l1"))
    assert final["rows_per_s"] > 0
    assert (tmp_path / "sae" / "sae_weights.safetensors").is_file()


def test_sae_casts_its_input_and_trains_on_other_precision_activations():
    from interplab.instrument import Site
    from interplab.models import MLP, MLPConfig
    from interplab.sae.buffer import sample_rows
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import SAETrainConfig, make_buffer, train_sae

    sae16 = SAE(SAEConfig(d_in=4, d_sae=8)).to(torch.bfloat16)
    out = sae16.loss(torch.randn(5, 4, generator=_gen()), 1e-3)  # float32 input to a bfloat16 SAE
    assert out.x_hat.dtype == torch.bfloat16 and bool(torch.isfinite(out.loss.float()))
    model = MLP(MLPConfig(d_in=6, d_hidden=(12,), d_out=2), seed=0).double()  # float64 activations
    cfg = SAETrainConfig(steps=30, batch_size=16, buffer_size=64, log_every=10, dead_fix="ghost-scaled", dead_window=2,
                         lr=3e-3)
    buf = make_buffer(model, Site("layers.0.hook_post"), sample_rows(torch.randn(100, 6, generator=_gen())), cfg)
    sae = SAE(SAEConfig(d_in=12, d_sae=24), seed=0)  # float32 SAE
    result = train_sae(sae, buf, cfg, quiet=True)
    assert buf.rows.dtype == torch.float64 and sae.W_dec.dtype == torch.float32
    assert result.metrics[-1]["mse"] < result.metrics[0]["mse"]


def test_train_sae_under_bfloat16_autocast_learns():
    from interplab.instrument import Site
    from interplab.models import MLP, MLPConfig
    from interplab.sae.buffer import sample_rows
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import SAETrainConfig, make_buffer, train_sae

    model = MLP(MLPConfig(d_in=6, d_hidden=(12,), d_out=2), seed=0)
    cfg = SAETrainConfig(steps=30, batch_size=16, buffer_size=64, log_every=10, autocast=True, tf32=True, lr=3e-3)
    buf = make_buffer(model, Site("layers.0.hook_post"), sample_rows(torch.randn(100, 6, generator=_gen())), cfg)
    sae = SAE(SAEConfig(d_in=12, d_sae=24), seed=0)
    result = train_sae(sae, buf, cfg, quiet=True)
    assert sae.W_dec.dtype == torch.float32 and result.metrics[-1]["mse"] < result.metrics[0]["mse"]
    assert torch.backends.cuda.matmul.allow_tf32 is False  # the TF32 switch is restored after the run


@pytest.mark.parametrize("method", ["mp", "omp", "gp"])
@pytest.mark.parametrize("device,dtype", CASES)
def test_pursuits(device, dtype, method):
    from interplab.sae.ito import readout
    from interplab.sae.model import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=8, d_sae=32), seed=0).to(resolve_device(device), dtype)
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    codes, x_hat = readout(sae, x, method, k=3)
    assert codes.device.type == device and codes.dtype == dtype and x_hat.dtype == dtype
    assert bool(((codes != 0).sum(-1) <= 3).all())
    err = (x_hat.float().cpu() - x).norm() / (x - sae.b_dec.detach().float().cpu()).norm()
    assert err < 1.0


def test_pursuits_refuse_mixed_dtypes_with_a_sentence():
    from interplab.sae.ito import gradient_pursuit

    with pytest.raises(InterplabError, match="same floating-point dtype"):
        gradient_pursuit(torch.ones(2, 4), torch.ones(6, 4, dtype=torch.float64), k=2)


# -- interventions --------------------------------------------------------------------------

@pytest.mark.parametrize("device,dtype", CASES)
def test_patching_and_attribution(device, dtype):
    from interplab.interventions.attribution import atp, atp_star
    from interplab.interventions.patching import activation_patching, path_patching

    m = _tiny_transformer(device, dtype, normalization="LN")
    clean, corrupt = _pair()
    grids = activation_patching(m, clean, corrupt, _metric, ["z", "resid_pre"], per_position=True)
    assert grids["z"].shape == (2, 2, 5) and bool(torch.isfinite(grids["z"].float()).all())
    effect = path_patching(m, clean, corrupt, _metric, (0, 1), ["logits", (1, 0, "v")])
    assert bool(torch.isfinite(effect.float()))
    for fn in (atp, atp_star):
        est = fn(m, clean, corrupt, _metric, ["z", "neuron", "resid_pre"], per_position=True)
        assert est["z"].shape == (2, 2, 5) and bool(torch.isfinite(est["neuron"].float()).all())
    if dtype == torch.float64:  # without a final norm the logits are linear in the last resid_post: AtP is exact
        m = _tiny_transformer(device, dtype)
        true = _metric(m(clean.to(m.W_E.device))) - _metric(m(corrupt.to(m.W_E.device)))
        est = atp(m, clean, corrupt, _metric, "resid_post", per_position=False)
        assert torch.isclose(est[-1].cpu(), true.cpu(), atol=1e-9)


@pytest.mark.parametrize("device,dtype", CASES)
def test_edge_circuits(device, dtype):
    from interplab.interventions.circuits import acdc, eap, eap_ig, faithfulness, patch_curve, score_pr_curve
    from interplab.interventions.edges import Graph, sender_outputs

    m = _tiny_transformer(device, dtype, normalization="LN")
    clean, corrupt = _pair(4)
    g = Graph.from_model(m)
    corr = sender_outputs(m, g, corrupt)  # corrupted tokens on the CPU: moved to the model
    assert corr.device.type == device and corr.dtype == dtype
    for scores in (eap(m, g, clean, corr, _metric), eap(m, g, clean, corr, _metric, exact_attention=True),
                   eap_ig(m, g, clean, corrupt, _metric, steps=2)):
        assert bool(torch.isfinite(scores.float()).all())
    result = acdc(m, g, clean, corr, threshold=0.0, metric=_metric, quiet=True)
    assert bool(torch.isfinite(torch.tensor(result.distance)))
    everything = torch.ones(len(g.receivers), len(g.senders), dtype=torch.bool)
    assert abs(faithfulness(m, g, clean, corr, everything, _metric) - 1) < 1e-2
    curve = patch_curve(m, g, clean, corr, g.edge_set(["a0.h0->a1.h1.k"]), _metric, [0.5, 1.0])
    assert curve.device.type == device and bool(torch.isfinite(curve.float()).all())
    prec, rec = score_pr_curve(scores, g.edge_set(["a0.h0->a1.h1.k", "a1.h0->logits"]), g)[:2]
    assert rec[0] == 1.0 and 0.0 <= float(prec.min()) <= 1.0


@pytest.mark.parametrize("device,dtype", CASES)
def test_ablate(device, dtype):
    from interplab.interventions.ablate import ablate

    m = _tiny_transformer(device, dtype)
    toks, _ = _pair(8)
    clean = m(toks.to(m.W_E.device))
    same = ablate(m, toks, "blocks.0.hook_resid_mid", "resample", sources=torch.arange(8))
    assert torch.equal(clean, same)
    _, acts = m.run_with_cache(toks.to(m.W_E.device))
    reference = acts["blocks.0.mlp.hook_post"].cpu().float()  # on the CPU in float32: ablate moves and casts it
    for method in ("zero", "mean", "resample"):
        out = ablate(m, toks, "blocks.0.mlp.hook_post", method, units=range(12), reference=reference, seed=1)
        assert out.dtype == dtype and out.device.type == device and bool(torch.isfinite(out.float()).all())


@pytest.mark.parametrize("device,dtype", CASES)
def test_scrub(device, dtype):
    from interplab.interventions.scrub import Group, Hypothesis, scrub
    from interplab.models import MLP, MLPConfig

    m = MLP(MLPConfig(d_in=3, d_hidden=(), d_out=3), seed=0)
    with torch.no_grad():
        m.W_U.copy_(torch.eye(3))
        m.b_U.zero_()
    m.to(resolve_device(device), dtype)
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    readout = lambda out: ((out[:, 0] > 0) & (out[:, 1] > 0)).long()  # noqa: E731
    side = lambda i: lambda c: (c[:, i] > 0).long()  # noqa: E731
    h = Hypothesis("hook_input", (Group([0], "same", key=side(0)), Group([1], "same", key=side(1))), name="and")
    r = scrub(m, h, x, readout(x), n_draws=2, readout=readout)
    assert r.agree == 1.0 and r.acc == 1.0


@pytest.mark.parametrize("device,dtype", CASES)
def test_feature_visualization(device, dtype):
    from interplab.analysis.featviz import unit_directions, visualize
    from interplab.models import MLP, MLPConfig

    model = MLP(MLPConfig(d_in=3, d_hidden=[4], d_out=2), seed=0)
    with torch.no_grad():
        model.layers[0].W.copy_(torch.eye(3, 4))
        model.layers[0].b.zero_()
    model.to(resolve_device(device), dtype)
    x = visualize(model, "layers.0.hook_pre", unit_directions(4, [0, 2]), shape=(3,), steps=30, clamp=(-1.0, 1.0),
                  l2=0.0, tv=0.0, quiet=True)
    assert x.device.type == device and x.dtype == dtype
    assert x[0, 0].item() == 1.0 and x[1, 2].item() == 1.0


# -- command line and loading ---------------------------------------------------------------

def test_asking_for_a_missing_device_is_one_sentence():
    if not cuda_available():
        with pytest.raises(InterplabError, match="no CUDA GPU"):
            resolve_device("cuda")
    if not mps_available():
        with pytest.raises(InterplabError, match="no MPS device"):
            resolve_device("mps")
    assert resolve_device("auto").type == ("cuda" if cuda_available() else "cpu")


@pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA GPU")
def test_cli_train_on_missing_cuda_exits_2(tmp_path, capsys):
    from interplab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "pair-labels", "--device", "cuda", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "CUDA" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("device", DEVICES)
def test_cli_train_records_device_and_dtype(device, tmp_path):
    from interplab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "modular-addition", "--p", "5", "--epochs", "2", "--device", device, "--dtype", "float64",
              "--quiet", "--out", str(tmp_path / "r")])
    assert e.value.code == 0
    placement = json.loads((tmp_path / "r" / "config.json").read_text())["placement"]
    assert placement["device"].startswith(device) and placement["dtype"] == "float64"


# -- studies --------------------------------------------------------------------------------

@pytest.mark.parametrize("device,dtype", [c for c in CASES if c.id != "cpu-float32"])  # float32 CPU: test_studies_*
def test_grokking_study_trains_where_asked(device, dtype, tmp_path):
    from interplab.studies import grokking

    r = grokking.run(tmp_path, p=11, max_epochs=30, checkpoint_every=10, quiet=True, device=device,
                     dtype=str(dtype).removeprefix("torch."))
    assert r["epochs_trained"] == 30 and 0.0 <= r["final_test_acc"] <= 1.0
    placement = json.loads((tmp_path / "config.json").read_text())["placement"]
    assert placement["device"].startswith(device) and placement["dtype"] == str(dtype).removeprefix("torch.")


@pytest.mark.parametrize("device,dtype", [c for c in CASES if c.id != "cpu-float32"])  # float32 CPU: test_sae_cli
def test_sae_tms_study_trains_where_asked(device, dtype, tmp_path):
    from interplab.studies import sae_tms

    r = sae_tms.run(tmp_path, n_features=6, n_hidden=3, tms_epochs=2, widths=(3, 6), l1_values=(0.3,), steps=30,
                    quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    assert 0 <= r["mmcs"] <= 1 and sorted(r["width_sweep"]) == ["3", "6"]
    saved = json.loads((tmp_path / "saes" / "w3_l1_0.3" / "cfg.json").read_text())
    assert saved["dtype"] == str(dtype).removeprefix("torch.") and saved["device"].startswith(device)


def test_every_study_offers_device_and_dtype():
    from typer.testing import CliRunner

    from interplab.cli import STUDIES, _register, app

    _register()
    assert len(STUDIES) >= 12
    for name in STUDIES:  # every study runs a model
        out = CliRunner().invoke(app, ["study", name, "--help"], terminal_width=200).output
        assert "--device" in out and "--dtype" in out, name


@pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA GPU")
def test_cli_study_on_missing_cuda_exits_2_before_running(tmp_path, capsys):
    from interplab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["study", "eis-transformer", "--labels", "builtin", "--device", "cuda", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "CUDA" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


# each study's smallest setting on the CPU in float64 and (skipped visibly without one) on a CUDA GPU in
# float32 and bfloat16: the run finishes, its numbers are finite, and results.json records where it ran
STUDY_CASES = [
    pytest.param("cpu", torch.float64, id="cpu-float64"),
    pytest.param("cuda", torch.float32, id="cuda-float32",
                 marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU on this machine")),
    pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16",
                 marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU on this machine")),
]


def _placed(results: dict, out, device: str, dtype: torch.dtype) -> None:
    name = str(dtype).removeprefix("torch.")
    assert results["device"].startswith(device) and results["dtype"] == name
    saved = json.loads((out / "results.json").read_text())
    assert saved["device"] == results["device"] and saved["dtype"] == name


def _finite(*values: float) -> None:
    assert all(math.isfinite(v) for v in values), values


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_eis_transformer_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import eis_transformer

    r = eis_transformer.run(tmp_path, labels="builtin", n_draws=1, quiet=True, device=device,
                            dtype=str(dtype).removeprefix("torch."), **eis_transformer.small_setup(epochs=5))
    _placed(r, tmp_path, device, dtype)
    _finite(r["acc_full"], r["two_dir_agree_fixed"], r["scrub_full_1_2_3a_3b"], r["effective_embed_max_err"])
    assert r["epochs"] == 5 and 0 <= r["scrub_fixed_1_2_3a_3b"] <= 1


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_eis_cnn_study_where_asked(device, dtype, tmp_path, shared_data):
    from interplab.studies import eis_cnn

    if not (shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the shared MNIST test set is not available")
    r = eis_cnn.run(tmp_path, data_dir=shared_data, max_train=500, n_draws=1, featviz_steps=2, n_extreme=10,
                    tolerances=(0.01,), quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(r["rule_agree"], r["scrub_agree_at_1pct"], r["pca_var_explained_2"])
    assert 0.5 <= r["rule_agree"] <= 1


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_tms_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import tms

    tiny = tms.Settings(geometry_sparsity=(0.0, 0.9), geometry_restarts=1, geometry_steps=50, phase_grid=2,
                        phase_restarts=1, phase_steps=50, dim_features=8, dim_hidden=2, dim_points=2, dim_steps=50,
                        finite_features=6, finite_T=(3,), finite_steps=50, steps_per_epoch=25)
    r = tms.run(tmp_path, settings=tiny, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(*r["dims_per_feature"], *r["finite_test_loss"])
    assert len(r["phase_diagram"]["cells"]) == 2
    config = json.loads((tmp_path / "runs" / "geometry" / "config.json").read_text())["placement"]
    assert config["device"].startswith(device) and config["dtype"] == str(dtype).removeprefix("torch.")


@pytest.mark.parametrize("device,dtype", STUDY_CASES + [pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16")])
def test_sae_mlp_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import sae_mlp

    r = sae_mlp.run(tmp_path, p=7, model_epochs=5, steps=20, batch_size=16, l1_values=(0.1,), recipes=("plain",),
                    dashboards=1, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(*(v[1] for v in r["ito"].values()), r["clean_loss"])
    assert sorted(r["ito"]) == ["encoder", "gp", "mp", "omp", "topk"]
    assert (tmp_path / "dashboards" / "index.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_atp_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import atp

    r = atp.run(tmp_path, n_prompts=4, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(r["atp_spearman"], r["atpstar_spearman"], r["saturated_mean_max_attention"])
    assert 0 <= r["atpstar_recall10"] <= 1


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_fact_finding_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import fact_finding

    tiny = fact_finding.Settings(n=8, mlp_hidden=(16,), mlp_epochs=20, n_first=6, n_last=6, n_names=20, d_model=16,
                                 n_layers=1, d_mlp=16, max_epochs=20, n_splits=2, n_quads=50)
    r = fact_finding.run(tmp_path, settings=tiny, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(r["transformer_clean_loss"], r["path_patching_total_effect"], *r["mlp_ablation_cost"].values())


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_embeddings_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import embeddings

    tiny = embeddings.Settings(corpus_bytes=30_000, people=6, cities=3, countries=2, objects=4, vocab_size=300,
                               n_ctx=32, d_model=16, n_layers=1, n_heads=2, d_mlp=32, epochs=1, rows_per_epoch=16,
                               batch_size=8, n_splits=2, n_docs=200, n_eval_docs=20, eval_len=12, min_count=3)
    r = embeddings.run(tmp_path, settings=tiny, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(r["cosine_mean_raw"]["trained"], *r["word_index_probe"].values())
    placement = json.loads((tmp_path / "run" / "config.json").read_text())["placement"]
    assert placement["dtype"] == str(dtype).removeprefix("torch.")


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_sae_lm_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import lm as lm_study
    from interplab.studies import sae_lm

    lm = dataclasses.replace(lm_study.Settings.quick(), corpus_bytes=60_000, people=6, cities=4, countries=2,
                             objects=4, vocab_size=300, n_ctx=32, d_model=16, n_layers=1, n_heads=2, d_mlp=32,
                             epochs=1, rows_per_epoch=32)
    s = sae_lm.Settings(lm=lm, expansion=2, steps=10, batch_size=32, l1_coeffs=(1.0,), main_l1=1.0, store_rows=1000,
                        shard_rows=512, buffer_size=256, eval_rows=12, ito_ks=(2,), steer_coefs=(0.0, 2.0),
                        steer_samples=2, steer_tokens=3, autointerp_features=2)
    r = sae_lm.run(tmp_path, settings=s, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(r["ce_clean"], r["ce_sae"], r["l0"])
    saved = json.loads((tmp_path / "saes" / "ghost_l1_1" / "cfg.json").read_text())
    assert saved["device"].startswith(device) and saved["dtype"] == str(dtype).removeprefix("torch.")
    assert json.loads((tmp_path / "lm" / "run" / "config.json").read_text())["placement"]["dtype"] == saved["dtype"]


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_lm_study_where_asked(device, dtype, tmp_path):
    from interplab.studies import lm as lm_study

    # two layers: composition scores, logit lens over layers and the attention view all run
    s = lm_study.Settings(corpus_bytes=30_000, people=6, cities=4, countries=2, objects=4, vocab_size=300, n_ctx=48,
                          d_model=16, n_layers=2, n_heads=2, d_mlp=32, epochs=1, rows_per_epoch=16, batch_size=16)
    r = lm_study.run(tmp_path, settings=s, quiet=True, device=device, dtype=str(dtype).removeprefix("torch."))
    _placed(r, tmp_path, device, dtype)
    _finite(r["loss_per_token"], r["max_induction_score"], *r["logit_lens_answer_rank"].values())
    assert list(r["logit_lens_answer_rank"]) == ["embed", "0", "1"]


@pytest.mark.parametrize("device,dtype", STUDY_CASES)
def test_circuit_discovery_cases_where_asked(device, dtype):
    from interplab.devices import Placement
    from interplab.studies import circuit_discovery as cd

    s = cd.Settings(n_prompts=6, ig_steps=2, sweep=(0.0, 1e9), grokking_p=7, grokking_epochs=5)
    case = cd.ioi_case(s, True, Placement(device, str(dtype).removeprefix("torch.")))
    _where(case.model, device, dtype)
    assert case.clean.device.type == device
    e = cd.evaluate_case(case, s, quiet=True)
    for m in cd.METHODS:
        assert 0.0 <= e["recall"][m] <= 1.0 and math.isfinite(e["faithfulness"][m]) and e["found"][m].device.type == "cpu"


@pytest.mark.parametrize("device", DEVICES)
def test_sae_commands_take_device_and_dtype(device, tmp_path):
    from typer.testing import CliRunner

    from interplab.models import Transformer
    from interplab.sae.cli import app
    from interplab.tasks.modular import modular_task
    from interplab.train import TrainConfig, train

    task = modular_task(p=5, frac_train=0.8, seed=0)
    cfg = dataclasses.replace(task.default_model_config(), d_model=16, n_heads=2, d_mlp=32)
    train(Transformer(cfg, seed=0), task, TrainConfig(epochs=3, checkpoint_every=3, keep_history=False),
          tmp_path / "run", quiet=True)
    runner = CliRunner()
    sae_dir = tmp_path / "sae"
    r = runner.invoke(app, ["train", "--run", str(tmp_path / "run"), "--site", "blocks.0.mlp.hook_post",
                            "--out", str(sae_dir), "--steps", "6", "--batch-size", "8", "--buffer-size", "32",
                            "--d-sae", "16", "--device", device, "--dtype", "float64", "--autocast", "--quiet"])
    assert r.exit_code == 0, r.output
    saved = json.loads((sae_dir / "cfg.json").read_text())
    assert saved["dtype"] == "float64" and saved["device"].startswith(device)
    assert json.loads((sae_dir / "train_config.json").read_text())["train"]["autocast"] is True
    rows = [json.loads(line) for line in (sae_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["rows_per_s"] > 0
    r = runner.invoke(app, ["eval", "--sae", str(sae_dir), "--run", str(tmp_path / "run"), "--method", "omp", "--k", "2",
                            "--device", device, "--dtype", "bfloat16"])
    assert r.exit_code == 0, r.output
    assert json.loads((sae_dir / "eval_omp.json").read_text())["l0"] <= 2
