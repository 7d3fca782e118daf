"""Study ``lm`` on a tiny setting, and the ``corpus`` / ``train lm`` / ``sample`` commands."""

from __future__ import annotations

import dataclasses
import json

import pytest

from interplab.errors import InterplabError
from interplab.studies.lm import Settings, run

TINY = Settings(corpus_bytes=30_000, people=6, cities=4, countries=2, objects=4, vocab_size=400, n_ctx=48, d_model=32,
                n_heads=2, d_mlp=64, epochs=3, rows_per_epoch=32, batch_size=16)


def test_study_quick_path_on_a_tiny_setting(tmp_path):
    r = run(tmp_path, settings=TINY, quiet=True)
    assert set(r["fact_accuracy"]) == {"sport", "team", "home", "country", "colour"}
    assert all(0.0 <= v <= 1.0 for v in r["fact_accuracy"].values())
    assert 0.0 < r["loss_per_token"] < 8.0
    assert list(r["logit_lens_answer_rank"]) == ["embed", "0", "1"]
    assert all(0 <= v < 400 for v in r["logit_lens_answer_rank"].values())
    assert isinstance(r["induction_heads"], list) and isinstance(r["prev_token_heads"], list)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["fact_accuracy"] == r["fact_accuracy"]
    page = (tmp_path / "report.html").read_text()
    assert 'class="attnview"' in page and '<option value="3">L1H1</option>' in page
    # a second run reuses the finished training run; other settings are refused
    again = run(tmp_path, settings=TINY, quiet=True)
    assert again["loss_per_token"] == r["loss_per_token"]
    with pytest.raises(InterplabError, match="other settings"):
        run(tmp_path, settings=dataclasses.replace(TINY, d_model=48), quiet=True)


def test_cli_corpus_train_sample_and_model_errors(tmp_path):
    from typer.testing import CliRunner

    from interplab import cli

    cli._register()
    runner = CliRunner()
    res = runner.invoke(cli.app, ["corpus", "make", "--out", str(tmp_path / "c"), "--size", "20KB", "--people", "4",
                                  "--cities", "2", "--countries", "1", "--objects", "2", "--vocab-size", "300",
                                  "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "tokens.bin").is_file() and (tmp_path / "c" / "annotations.jsonl").is_file()
    res = runner.invoke(cli.app, ["train", "lm", "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "r"),
                                  "--epochs", "2", "--rows-per-epoch", "8", "--n-ctx", "48", "--d-model", "16",
                                  "--n-heads", "2", "--d-mlp", "32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "fact_acc_sport" in res.output
    res = runner.invoke(cli.app, ["sample", str(tmp_path / "r"), "--prompt", "One day,", "--max-new-tokens", "5",
                                  "--seed", "3"])
    again = runner.invoke(cli.app, ["sample", str(tmp_path / "r"), "--prompt", "One day,", "--max-new-tokens", "5",
                                    "--seed", "3"])
    assert res.exit_code == 0 and res.output == again.output and res.output.startswith("One day,")
    res = runner.invoke(cli.app, ["study", "lm", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "s")])
    assert res.exit_code != 0 and isinstance(res.exception, (InterplabError, SystemExit))
