"""The `interplab sae` commands and the two SAE studies, on tiny settings."""

import json
import pytest
import torch
import typer
from typer.testing import CliRunner

from interplab.models import Transformer
from interplab.sae.cli import app
from interplab.sae.saelens import load_saelens
from interplab.tasks.modular import modular_task
from interplab.train import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    task = modular_task(p=7, frac_train=0.8, seed=0)
    model = Transformer(task.default_model_config(), seed=0)
    train(model, task, TrainConfig(epochs=30, log_every=10, checkpoint_every=30, keep_history=False), out, quiet=True)
    return out


def test_sae_train_then_eval_then_dashboard(run_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sae"
    r = runner.invoke(app, ["train", "--run", str(run_dir), "--site", "blocks.0.mlp.hook_post", "--out", str(out),
                            "--steps", "40", "--batch-size", "32", "--buffer-size", "256", "--d-sae", "64",
                            "--dead-fix", "ghost-scaled", "--quiet"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "cfg.json").read_text())  # the SAELens layout
    assert (out / "sae_weights.safetensors").is_file() and cfg["d_sae"] == 64 and cfg["d_in"] == 512
    assert cfg["metadata"]["hook_name"] == "blocks.0.mlp.hook_post" and cfg["metadata"]["interplab_position"] == -1
    sae = load_saelens(out)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)

    r = runner.invoke(app, ["eval", "--sae", str(out), "--run", str(run_dir), "--method", "gp", "--k", "4"])
    assert r.exit_code == 0, r.output
    result = json.loads((out / "eval_gp.json").read_text())
    assert result["l0"] <= 4 and -10 < result["recovered_zero"] <= 1.0 + 1e-6

    r = runner.invoke(app, ["dashboard", "--sae", str(out), "--run", str(run_dir), "--out", str(tmp_path / "dash"),
                            "--top-n", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "dash" / "index.html").is_file()


def test_sae_train_errors_are_one_sentence(run_dir, tmp_path):
    from interplab.errors import InterplabError

    with pytest.raises(InterplabError, match="no activation site named 'blocks.9.mlp.hook_post'"):
        CliRunner().invoke(app, ["train", "--run", str(run_dir), "--site", "blocks.9.mlp.hook_post",
                                 "--out", str(tmp_path / "x")], catch_exceptions=False)
    with pytest.raises(InterplabError, match="apply to language models only"):
        CliRunner().invoke(app, ["train", "--run", str(run_dir), "--site", "blocks.0.mlp.hook_post", "--shards",
                                 str(tmp_path / "s"), "--out", str(tmp_path / "z")], catch_exceptions=False)
    with pytest.raises(InterplabError, match="dead_fix must be one of"):
        CliRunner().invoke(app, ["train", "--run", str(run_dir), "--site", "blocks.0.mlp.hook_post", "--dead-fix",
                                 "ghost", "--out", str(tmp_path / "y")], catch_exceptions=False)


def test_commands_are_registered():
    import importlib

    from interplab import cli

    for name in ("sae-tms", "sae-mlp"):
        module = importlib.import_module(cli.STUDIES[name])
        assert callable(module.cli) and callable(module.run) and module.__doc__.strip()
    assert importlib.import_module(cli.SUBAPPS["sae"]).app is app


def test_sae_tms_study_contract(tmp_path):
    from interplab.studies import sae_tms

    cmd = typer.Typer()
    cmd.command()(sae_tms.cli)
    r = CliRunner().invoke(cmd, ["--out", str(tmp_path), "--n-features", "6", "--n-hidden", "3", "--tms-epochs", "3",
                                 "--widths", "3,6,9", "--l1", "0.3", "--steps", "300", "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["width_sweep"]) == {"3", "6", "9"} and isinstance(res["l0"], float)
    # narrower than the number of represented features cannot cover them all
    assert res["width_sweep"]["3"] < res["width_sweep"][str(max(3, res["true_width"]))] or res["true_width"] <= 3
    assert (tmp_path / "report.html").is_file()
