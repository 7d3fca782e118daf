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
    pre = r["linearity_break_ratio_pre"]
    assert max(pre["layers.0.hook_pre"]) < 1e-6  # a linear map of one-hot (a, b): additive whatever the weights
    assert pre["layers.1.hook_pre"][0] > pre["layers.1.hook_pre"][1] + 0.1  # the next layer reads the non-additive part
    assert set(r["linearity_break_ratio_shuffled_weights"]) == set(br) | set(pre)
    mlp = r["probe_acc_by_layer"]["mlp"]
    assert mlp["hook_input"] < 0.7 and mlp["layers.1.hook_post"] > 0.9
    tf, chance = r["probe_acc_by_layer"]["transformer"], r["probe_chance"]["transformer"]
    assert r["combine_layer"] == 0 and r["probe_rises_after_combine"] is True
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


TINY = embeddings.Settings(corpus_bytes=30_000, people=6, cities=3, countries=2, objects=4, vocab_size=300, n_ctx=32,
                          d_model=16, n_layers=2, n_heads=2, d_mlp=32, epochs=2, rows_per_epoch=16, batch_size=8,
                          n_splits=2, n_docs=200, n_eval_docs=20, eval_len=12, min_count=3)


def test_embeddings_on_the_corpus_lm_and_reuse_of_its_run(tmp_path):
    r = embeddings.run(tmp_path / "a", settings=TINY, quiet=True)
    assert (tmp_path / "a" / "run" / "model.safetensors").is_file() and "corpus LM" in r["source"]
    assert r["n_tokens_analysed"] >= 10 and {"capital", "leading_space", "length"} <= set(r["property_probe"])
    assert "corpus category" in r["property_probe"] and {"person", "word"} <= set(r["category_classes"])
    sites = {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert set(r["truncation_similarity"]) == sites and set(r["truncation_by_word_index"]) == sites
    assert {"person", "word"} <= set(r["truncation_similarity"]["blocks.0.hook_resid_post"])
    assert set(r["word_index_probe"]) == {"hook_embed"} | sites
    assert set(r["relation_pairs"]) == {"city -> country", "object -> colour"}
    # a run of the lm task (as `interplab train lm` writes it) is analysed as it is, not retrained
    again = embeddings.run(tmp_path / "b", run_dir=tmp_path / "a" / "run", settings=TINY, quiet=True)
    assert again["cosine_mean_raw"] == r["cosine_mean_raw"] and not (tmp_path / "b" / "run").exists()
    assert "<img" in (tmp_path / "b" / "report.html").read_text()


def test_embeddings_refuses_a_run_that_is_not_an_lm_run(tmp_path):
    import pytest

    from interplab.errors import InterplabError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"task": {"name": "modular"}}))
    with pytest.raises(InterplabError, match="not a run of the lm task"):
        embeddings.run(tmp_path / "out", run_dir=tmp_path / "run", settings=TINY, quiet=True)


def test_embeddings_on_a_hugging_face_model(tmp_path):
    from lm_fixtures import make_model, make_tokenizer

    tok = make_tokenizer()
    make_model("gpt2", len(tok)).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    r = embeddings.run(tmp_path / "out", model_name=str(tmp_path / "gpt2"), settings=TINY, quiet=True)
    assert r["source"].startswith("Hugging Face model") and r["d_model"] == 32
    assert set(r["cosine_mean_raw"]) == {"trained"}  # no random-init twin of a loaded model
    assert "country -> capital" in r["relation_pairs"]
    assert set(r["word_index_probe"]) == {"hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert "<img" in (tmp_path / "out" / "report.html").read_text()
