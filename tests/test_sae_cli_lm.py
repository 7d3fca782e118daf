"""`interplab sae train` on a language model's activations: a run of `interplab train lm`, or --model."""

import json

import pytest
import torch
from typer.testing import CliRunner

from interplab.errors import InterplabError
from interplab.lm.corpus import make_corpus
from interplab.lm.tokens import tokenize_corpus
from interplab.models import Transformer
from interplab.sae.cli import app
from interplab.sae.saelens import load_saelens
from interplab.tasks.lm import LMTask
from interplab.train import TrainConfig, train

SMALL = ["--steps", "20", "--batch-size", "16", "--buffer-size", "64", "--expansion", "2", "--quiet"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    make_corpus(root / "corpus", n_bytes=30_000, n_people=4, n_cities=2, n_countries=1, n_objects=2, quiet=True)
    tokenize_corpus(root / "corpus", vocab_size=300, quiet=True)
    task = LMTask(root / "corpus", n_ctx=16, rows_per_epoch=16, eval_rows=4)
    model = Transformer(task.default_model_config(d_model=16, n_layers=2, n_heads=2, d_mlp=32), seed=0)
    train(model, task, TrainConfig(epochs=1, batch_size=8, log_every=1, checkpoint_every=1, keep_history=False),
          root / "run", quiet=True)
    return root


def test_train_on_an_lm_run_from_disk_shards(lm_run, tmp_path):
    out, shards = tmp_path / "sae", tmp_path / "acts"
    r = CliRunner().invoke(app, ["train", "--run", str(lm_run / "run"), "--layer", "1", "--out", str(out),
                                 "--shards", str(shards), "--shard-rows", "200", "--max-rows", "40", *SMALL])
    assert r.exit_code == 0, r.output
    sae = load_saelens(out)
    assert sae.cfg.hook_name == "blocks.1.hook_resid_pre" and sae.cfg.d_in == 16 and sae.cfg.d_sae == 32
    meta = json.loads((shards / "store.json").read_text())
    # 40 rows, 8 held out for the loss check, 15 positions each without BOS, in shards of at most 200 rows
    assert meta["rows"] == 32 * 15 and len(meta["shards"]) == 3 and meta["exclude_bos"] is True
    assert sae.cfg.act_scale == pytest.approx(16 ** 0.5 / meta["mean_norm"])
    assert "loss_recovered" in r.output
    # a second SAE on a short site name at a layer, chosen positions with BOS, in memory
    r = CliRunner().invoke(app, ["train", "--run", str(lm_run / "run"), "--layer", "0", "--site", "mlp_out",
                                 "--positions", "0,-1", "--include-bos", "--out", str(tmp_path / "sae2"), *SMALL])
    assert r.exit_code == 0, r.output
    assert load_saelens(tmp_path / "sae2").cfg.hook_name == "blocks.0.hook_mlp_out"
    # shards of another site are not reused
    with pytest.raises(InterplabError, match="another site"):
        CliRunner().invoke(app, ["train", "--run", str(lm_run / "run"), "--layer", "0", "--out", str(tmp_path / "x"),
                                 "--shards", str(shards), *SMALL], catch_exceptions=False)


def test_train_on_a_loaded_model(lm_run, tmp_path):
    from lm_fixtures import make_checkpoints

    ckpt = make_checkpoints(tmp_path / "ckpt")["gpt2"]
    r = CliRunner().invoke(app, ["train", "--model", str(ckpt), "--text", str(lm_run / "corpus"), "--layer", "1",
                                 "--n-ctx", "12", "--max-rows", "30", "--device", "cpu", "--out", str(tmp_path / "sae"),
                                 *SMALL])
    assert r.exit_code == 0, r.output
    sae = load_saelens(tmp_path / "sae")
    assert sae.cfg.hook_name == "blocks.1.hook_resid_pre" and sae.cfg.act_scale > 0
    assert (tmp_path / "sae" / "tokens.bin").is_file()


def test_lm_options_errors(lm_run, tmp_path):
    def fails(args, match):
        with pytest.raises(InterplabError, match=match):
            CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "e"), *SMALL], catch_exceptions=False)

    fails(["--layer", "1"], "exactly one of --run")
    fails(["--run", str(lm_run / "run")], "Name the activation site")
    fails(["--run", str(lm_run / "run"), "--layer", "1", "--site", "blocks.1.hook_resid_pre"], "full hook name")
    fails(["--run", str(lm_run / "run"), "--layer", "1", "--positions", "40"], "out of range")
    fails(["--run", str(lm_run / "run"), "--layer", "7"], "no activation site")
