import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from interplab import cli
from interplab.errors import InterplabError
from interplab.studies import eis_transformer
from interplab.studies.eis_transformer import SETTINGS, check_labels, run, small_setup

FRACTIONS = ["acc_full", "acc_test", "acc_train", "fixed_attn_agree", "fixed_attn_acc", "pca_var_explained_2",
             "two_dir_agree_full", "two_dir_agree_fixed", "filters_and_agree_fixed", "filters_and_agree_full",
             "mistakes_near_threshold", "random_near_threshold"]


@pytest.mark.slow
def test_pipeline_finds_the_explanation_on_a_fresh_small_model(tmp_path):
    res = run(tmp_path, labels="builtin", n_draws=1, quiet=True, **small_setup(epochs=40))
    scrub_keys = [f"scrub_{v}_{s}" for v in ("full", "fixed") for s in SETTINGS]
    for k in FRACTIONS + scrub_keys:
        assert 0.0 <= res[k] <= 1.0, k
    assert res["labels_source"] == "builtin" and res["epochs"] == 40
    assert res["acc_full"] > 0.75  # it learned something in 40 epochs
    # the explanation is computed, not typed in: the effective embeddings reproduce the fixed model,
    # and the filters built from them agree with the rule fitted on its activations
    assert res["effective_embed_max_err"] < 1e-4
    assert abs(res["filters_and_agree_fixed"] - res["two_dir_agree_fixed"]) < 1e-3
    assert res["two_dir_agree_fixed"] > 0.8
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["scrub_full_1_2_3a_3b"] == res["scrub_full_1_2_3a_3b"]
    html = (tmp_path / "report.html").read_text()
    assert "Causal scrubbing" in html and "data:image/png;base64" in html
    # the method variants are scored on the same model; refitting the filter thresholds starts from ours
    variants = [k for k in res if k.startswith("variant_")]
    assert len(variants) >= 11 and all(0.0 <= res[k] <= 1.0 for k in variants)
    assert res["variant_filters_refit_agree_fixed"] >= res["filters_and_agree_fixed"]
    assert "Which choices of the method move the numbers" in html


def test_measured_runs_beside_the_published_figures():
    from interplab.studies.eis_transformer import PUBLISHED, measured_runs

    runs = measured_runs()
    assert [r["epochs"] for r in runs] == [540, 5000]
    for r in runs:
        assert r["labels_source"] == "published" and r["command"].startswith("interplab study eis-transformer")
        for key, _, _ in PUBLISHED:
            assert 0.5 < r[key] <= 1.0, key


@pytest.mark.parametrize("payload, words", [
    ({"labels": np.zeros((5, 5))}, "must be 113x113"),
    ({"labels": np.full((113, 113), 2.0)}, "only 0 and 1"),
    ({"other": np.zeros((113, 113))}, "no 'labels' entry"),
    ({"labels": print}, "not a numpy-only pickle"),
])
def test_bad_label_files_are_refused_with_one_sentence_and_exit_2(tmp_path, payload, words):
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps(payload))
    out = tmp_path / "out"
    cli._register()
    result = CliRunner().invoke(cli.app, ["study", "eis-transformer", "--labels", str(path), "--out", str(out)])
    assert isinstance(result.exception, InterplabError) and words in str(result.exception)
    assert len(str(result.exception).strip().splitlines()) == 1
    assert not out.exists()  # nothing executed
    with pytest.raises(InterplabError, match=words):
        check_labels(str(path), None)


def test_main_turns_a_bad_label_file_into_exit_code_2(tmp_path, monkeypatch, capsys):
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps({"labels": np.zeros((3, 3))}))
    monkeypatch.setattr("sys.argv", ["interplab", "study", "eis-transformer", "--labels", str(path),
                                     "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "113x113" in err and len(err.strip().splitlines()) == 1


def test_run_dir_must_be_a_pair_label_transformer(tmp_path):
    from interplab.models import MLP, MLPConfig
    from interplab.runs import save_model

    save_model(tmp_path / "mlp", MLP(MLPConfig(d_in=2, d_hidden=[3], d_out=2)))
    with pytest.raises(InterplabError, match="not a transformer"):
        eis_transformer.run(tmp_path / "out", labels="builtin", run_dir=tmp_path / "mlp", quiet=True)
