"""The atp and grokking studies end to end on tiny settings: files, contract keys, CLI."""

import json

from typer.testing import CliRunner

from interplab.cli import _register, app
from interplab.studies import atp, grokking


def test_grokking_study_tiny(tmp_path):
    r = grokking.run(tmp_path, p=11, max_epochs=60, checkpoint_every=20, quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in ("final_test_acc", "key_frequencies", "epoch_train_acc_99", "epoch_test_acc_99",
                "restricted_loss", "excluded_loss", "test_loss"):
        assert key in saved
    assert saved["checkpoint_epochs"] == [20, 40, 60]
    assert len(saved["restricted_loss"]) == len(saved["excluded_loss"]) == len(saved["test_loss"]) == 3
    assert 0.0 <= r["final_test_acc"] <= 1.0
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # a second run reuses the finished training run
    again = grokking.run(tmp_path, p=11, max_epochs=60, checkpoint_every=20, quiet=True)
    assert again["test_loss"] == r["test_loss"]
    _register()
    res = CliRunner().invoke(app, ["study", "grokking", "--out", str(tmp_path), "--p", "13", "--max-epochs", "60",
                                   "--quiet"])
    assert res.exit_code != 0 and "other settings" in str(res.exception)


def test_atp_study_small(tmp_path):
    r = atp.run(tmp_path, n_prompts=8, quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in ("atp_recall10", "atpstar_recall10", "atp_spearman", "atpstar_spearman", "atp_false_negatives",
                "atpstar_false_negatives", "time_ratio_exhaustive_over_atpstar", "induction_heads",
                "prev_token_heads"):
        assert key in saved
    assert 0.0 <= r["atpstar_recall10"] <= 1.0 and r["time_ratio_exhaustive_over_atpstar"] > 1.0
    # a real induction circuit: previous-token heads in layer 0, induction heads in layer 1 only
    assert r["induction_test_acc"] > 0.95
    assert r["induction_heads"] and all(h.startswith("1.") for h in r["induction_heads"])
    assert r["prev_token_heads"] and all(h.startswith("0.") for h in r["prev_token_heads"])
    # the top components are first-copy residual positions feeding the induction heads' keys: AtP's
    # linearisation through their softmax misses them, AtP*'s exact recomputation does not
    assert r["atpstar_recall10"] >= 0.7 and r["atpstar_recall10"] > r["atp_recall10"]
    # the decisive query nodes of the saturated model sit behind a saturated softmax
    assert r["atpstar_false_negatives"] < r["atp_false_negatives"]
    # ranking-based misses never exceed the components above the bar; the subsampling diagnostic ran
    assert 0 <= r["induction_atpstar_missed"] <= r["induction_atpstar_verification_cost"]
    assert r["induction_subsampling_unverified"] > 0 and r["induction_subsampling_max_upper"] > 0
    assert "AtP*" in (tmp_path / "report.html").read_text()


def test_grokking_refuses_an_even_modulus_before_training(tmp_path):
    import pytest

    from interplab.errors import InterplabError

    with pytest.raises(InterplabError, match="odd modulus"):
        grokking.run(tmp_path, p=10, quiet=True)
    assert not (tmp_path / "checkpoints").exists()


def test_grokking_cleanup_stop_survives_a_resume(tmp_path):
    """The stop rule's state (first epoch at test acc 0.99) is rebuilt from the metrics up to the checkpoint,
    so a run resumed after that epoch stops where an uninterrupted one does."""
    import torch

    from interplab.io import save_torch
    from interplab.runs import state_path

    rows = [{"epoch": e, "test_acc": 0.5 if e < 1000 else 0.995} for e in range(50, 3001, 50)]
    whole = grokking._StopAfterCleanup()
    stop_at = next(r["epoch"] for r in rows if whole(r))
    assert stop_at == 1500  # first at 1000, then max(500, 150) epochs
    # killed after the checkpoint of epoch 1200 (rows past it were logged but are not in the checkpoint)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows if r["epoch"] <= 1300)
    save_torch(state_path(tmp_path), {"epoch": 1200, "model": {}, "optimizer": {}, "generator": torch.Generator().get_state()})
    resumed = grokking._StopAfterCleanup.for_run(tmp_path)
    assert resumed.first == 1000
    assert next(r["epoch"] for r in rows if r["epoch"] > 1200 and resumed(r)) == stop_at
    # a fresh rule (what a resume used before) would first see 0.99 at 1250 and stop later
    fresh = grokking._StopAfterCleanup()
    assert next(r["epoch"] for r in rows if r["epoch"] > 1200 and fresh(r)) == 1750
    assert grokking._StopAfterCleanup.for_run(tmp_path / "none").first is None
