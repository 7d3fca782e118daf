"""The fact-finding and embeddings studies on small settings: their headline claims hold."""

import json

from typer.testing import CliRunner

from interplab.studies import embeddings, fact_finding

SMALL = fact_finding.Settings(n=12, mlp_hidden=(64, 64), mlp_epochs=300, n_first=12, n_last=12, n_names=100,
                              d_model=32, n_layers=2, d_mlp=64, max_epochs=600, n_splits=3, n_quads=500)


def test_fact_finding_small(tmp_path):
    r = fact_finding.run(tmp_path, settings=SMALL, quiet=True)
    assert r["mlp_train_acc"] == 1.0 and r["transformer_train_acc"] == 1.0
    br = r["linearity_break_ratio"]
    assert br["hook_input"] == [0.0, 0.0]  # one-hot (a, b) is additive
    assert br["layers.1.hook_post"][0] > br["layers.1.hook_post"][1] + 0.1  # trained breaks more than random init
    mlp = r["probe_acc_by_layer"]["mlp"]
    assert mlp["hook_input"] < 0.7 and mlp["layers.1.hook_post"] > 0.9
    tf, chance = r["probe_acc_by_layer"]["transformer"], r["probe_chance"]["transformer"]
    assert r["combine_layer"] == 0
    assert tf["blocks.0.hook_resid_pre"] < chance + 0.15 and tf["blocks.1.hook_resid_post"] > chance + 0.3
    assert r["mlp_ablation_cost"]["0"] > 0.1
    assert set(r["path_patching"]) >= {"head 0.0", "mlp0"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["linearity_break_ratio"] == br
    assert "<img" in (tmp_path / "report.html").read_text()


def test_studies_are_registered_in_the_cli():
    from interplab.cli import _register, app

    _register()
    for name in ("fact-finding", "embeddings"):
        result = CliRunner().invoke(app, ["study", name, "--help"])
        assert result.exit_code == 0 and "--out" in result.output


def test_embeddings_refuses_an_hf_model_without_interplab_lm(tmp_path):
    import pytest

    from interplab.errors import InterplabError

    try:
        import interplab.lm  # noqa: F401
        pytest.skip("interplab.lm exists in this build")
    except ImportError:
        pass
    with pytest.raises(InterplabError, match="interplab.lm"):
        embeddings.run(tmp_path, model_name="gpt2", quiet=True)


def test_embeddings_tiny_standin_and_reuse(tmp_path):
    tiny = embeddings.Settings(n_sentences=400, vocab_size=600, n_ctx=16, d_model=16, d_mlp=32, epochs=1,
                               n_splits=2, n_eval_sequences=30)
    r = embeddings.run(tmp_path / "a", settings=tiny, quiet=True)
    assert r["n_tokens_analysed"] >= 10 and set(r["property_probe"]) >= {"capital", "leading_space", "length"}
    assert set(r["truncation_similarity"]) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert set(r["word_index_probe"]) == {"hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    again = embeddings.run(tmp_path / "b", run_dir=tmp_path / "a" / "lm", settings=tiny, quiet=True)
    assert again["cosine_mean_raw"] == r["cosine_mean_raw"] and again["property_probe"] == r["property_probe"]
    assert "<img" in (tmp_path / "b" / "report.html").read_text()
