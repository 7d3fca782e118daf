"""The sae-lm study end to end on a tiny corpus and LM (contract: keys, shapes, report)."""

import dataclasses
import json

import pytest

from interplab.errors import InterplabError
from interplab.studies import lm as lm_study
from interplab.studies import sae_lm


def test_sae_lm_study_contract(tmp_path):
    lm = dataclasses.replace(lm_study.Settings.quick(), corpus_bytes=150_000, people=8, cities=4, countries=3,
                             objects=6, vocab_size=400, n_ctx=32, d_model=32, n_layers=2, n_heads=2, d_mlp=64,
                             epochs=4, rows_per_epoch=64)
    s = sae_lm.Settings(lm=lm, expansion=2, steps=60, batch_size=64, l1_coeffs=(1.0, 4.0), main_l1=1.0, store_rows=6000,
                        shard_rows=2048, buffer_size=1024, eval_rows=40, ito_ks=(4,), steer_coefs=(0.0, 4.0),
                        steer_samples=4, steer_tokens=4, autointerp_features=3)
    res = sae_lm.run(tmp_path, settings=s, quiet=True)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("pareto", "loss_recovered", "l0", "attribute_feature_auc", "steering", "autointerp_score_mean"):
        assert key in on_disk
    assert set(res["pareto"]) == {"plain", "resample", "ghost"} and all(len(v) == 2 for v in res["pareto"].values())
    assert set(res["steering"]) == {"original", "features", "single", "recon_diff", "projected"}
    assert all(len(row) == 3 and 0 <= row[1] <= 1 for rows in res["steering"].values() for row in rows)
    assert 0 <= res["steering_prompted"] <= 1 and res["steering_vector_norm"] > 0 and res["steering_resid_norm"] > 0
    assert res["steering_prompts"][0] >= 1 and sum(res["steering_prompts"]) == 8  # the 8 people's sport prompts
    assert res["attribute_feature_auc"] and all(0 <= v <= 1 for v in res["attribute_feature_auc"].values())
    assert res["ce_clean"] < res["ce_zero"] and res["l0"] > 0
    assert len(list((tmp_path / "acts").glob("shard_*.safetensors"))) >= 2
    html = (tmp_path / "report.html").read_text()
    assert "Steering towards" in html and (tmp_path / "dashboards" / "index.html").is_file()
    # asked to reuse SAE runs made with other settings, the study refuses
    with pytest.raises(InterplabError, match="other settings"):
        sae_lm.run(tmp_path, settings=dataclasses.replace(s, steps=61), quiet=True)


def test_sae_lm_study_on_a_loaded_hf_model(tmp_path):
    # --model: a tiny random GPT-2 checkpoint made here, loaded through interplab.lm.load (TransformerBridge)
    from lm_fixtures import make_checkpoints

    ckpt = make_checkpoints(tmp_path / "ckpt")["gpt2"]
    lm = dataclasses.replace(lm_study.Settings.quick(), corpus_bytes=60_000, people=6, cities=4, countries=2,
                             objects=4, n_ctx=24)
    s = sae_lm.Settings(lm=lm, expansion=2, steps=30, batch_size=32, l1_coeffs=(1.0,), main_l1=1.0, store_rows=2000,
                        shard_rows=1024, buffer_size=512, eval_rows=12, ito_ks=(2,), steer_coefs=(0.0, 2.0),
                        steer_samples=2, steer_tokens=3, autointerp_features=2)
    res = sae_lm.run(tmp_path / "out", settings=s, model=str(ckpt), device="cpu", quiet=True)
    assert res["model"] == str(ckpt) and res["hook_name"].startswith("blocks.")
    assert set(res["steering"]) == {"original", "features", "single", "recon_diff", "projected"}
    assert 0 <= res["l0"] <= res["d_sae"]
