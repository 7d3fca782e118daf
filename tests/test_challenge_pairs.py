"""The pairs challenge family: random rules, make -> solve (public files only) -> score, threshold refits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from interplab.analysis.filters import additive_filter, fit_filter_thresholds, refine_separable_rule
from interplab.challenges import pairs
from interplab.errors import InterplabError
from interplab.studies.eis_transformer import small_setup
from interplab.tasks.pair_labels import FILTER_FAMILIES, filter_values, pair_rule_table, random_pair_rule


def test_random_rules_are_seeded_varied_and_balanced():
    rules = [random_pair_rule(s) for s in range(10)]
    assert json.dumps(random_pair_rule(3)) == json.dumps(rules[3])  # same seed, same rule
    assert {r["op"] for r in rules} == {"and", "or"}
    assert len({f["family"] for r in rules for f in r["filters"]}) >= 4
    for r in rules:
        t = pair_rule_table(r)
        assert t.shape == (113, 113) and 0.2 <= t.mean() <= 0.8
        # JSON round trip (what answer.json stores) gives the same table
        assert (pair_rule_table(json.loads(json.dumps(r))) == t).all()
    assert random_pair_rule(1, op="or")["op"] == "or"
    assert all(f["family"] == "bands" for f in random_pair_rule(2, families=("bands",))["filters"])
    with pytest.raises(InterplabError, match="Unknown filter family"):
        random_pair_rule(0, families=("spiral",))
    assert set(FILTER_FAMILIES) >= {"linear", "curved", "bands"}


@pytest.mark.parametrize("seed", range(6))
def test_thresholds_of_the_hidden_filters_are_recovered_exactly(seed):
    # the solver's last stage: given separable filters equal to the hidden ones up to a shift and
    # scale (what a direction reads), the refit thresholds reproduce the hidden rule, AND or OR
    rule = random_pair_rule(seed)
    hidden = torch.as_tensor(pair_rule_table(rule))
    images = [2.5 * torch.as_tensor(filter_values(f)) - 1.0 for f in rule["filters"]]
    for img in images:  # the additive part of a separable image is the image
        g, h = additive_filter(img)
        assert torch.allclose(g[:, None] + h[None, :], img.double())
    thresholds, agree = fit_filter_thresholds(images, hidden, rule["op"])
    assert agree == 1.0
    sol = {"op": rule["op"], "filters": [{"g": additive_filter(i)[0].tolist(), "h": additive_filter(i)[1].tolist(),
                                          "threshold": t} for i, t in zip(images, thresholds)]}
    assert (pairs.solution_table(sol) == hidden.numpy()).all()
    # the other op cannot match as well unless one filter is redundant
    _, other = fit_filter_thresholds(images, hidden, "or" if rule["op"] == "and" else "and")
    assert other <= 1.0


@pytest.mark.parametrize("seed", [0, 1])  # seed 0: curved-linear OR bands; seed 1: linear AND curved-bands
def test_refinement_repairs_distorted_filters(seed):
    # filters read from a network are the hidden ones distorted; refinement on the labels repairs them
    rule = random_pair_rule(seed)
    hidden = torch.as_tensor(pair_rule_table(rule))
    gen = torch.Generator().manual_seed(seed)
    gs, hs = [], []
    for f in rule["filters"]:
        g, h = additive_filter(torch.as_tensor(filter_values(f)))
        gs.append(g + 0.3 * g.std() * torch.randn(len(g), generator=gen, dtype=torch.float64))
        hs.append(h + 0.3 * h.std() * torch.randn(len(h), generator=gen, dtype=torch.float64))
    _, before = fit_filter_thresholds([g[:, None] + h[None, :] for g, h in zip(gs, hs)], hidden, rule["op"])
    gs2, hs2, thresholds, after = refine_separable_rule(gs, hs, hidden, rule["op"], steps=200)
    assert before < 0.97 and after > 0.99 and after > before
    sol = {"op": rule["op"], "filters": [{"g": g.tolist(), "h": h.tolist(), "threshold": t}
                                         for g, h, t in zip(gs2, hs2, thresholds)]}
    assert (pairs.solution_table(sol) == hidden.numpy()).mean() == pytest.approx(after)


def test_make_solve_score_reads_only_public(tmp_path):
    setup = small_setup(epochs=60)
    made = pairs.make(4, tmp_path / "c", model_config=setup["model_config"], train_config=setup["train_config"],
                      quiet=True)
    info = json.loads((made / "public" / "challenge.json").read_text())
    assert info["family"] == "pairs" and info["seed"] == 4 and 0.5 < info["stated_test_accuracy"] <= 1.0
    answer = json.loads((made / "answer.json").read_text())
    assert (pair_rule_table(answer["rule"]) == pair_rule_table(random_pair_rule(4))).all()
    # the solver gets a directory holding public/ only: the answer and the training run are elsewhere
    shutil.copytree(made / "public", tmp_path / "only" / "public")
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["public"]
    sol = pairs.solve(tmp_path / "only", tmp_path / "s", quick=True, quiet=True)
    stored = json.loads((tmp_path / "s" / "solution.json").read_text())
    assert stored["verdict"] == sol["verdict"] in ("solved", "unsolved")
    table = pairs.solution_table(stored)
    assert table.shape == (113, 113)
    assert ["".join(map(str, row)) for row in table] == stored["table"]
    with pytest.raises(InterplabError, match="answer.json"):
        pairs.score(tmp_path / "only", tmp_path / "s")
    sc = pairs.score(made, tmp_path / "s")
    assert sc["rule_form"] == answer["rule_form"]
    assert sc["agreement_network"] == pytest.approx(sol["agreement_network"], abs=1e-9)
    # even a 60-epoch small network carries the rule: far above the majority-class baseline
    hidden = pair_rule_table(answer["rule"])
    assert sc["agreement_hidden"] > max(hidden.mean(), 1 - hidden.mean()) + 0.1
    # the verdict's bound: agreement with the network minus the network's stated error on all pairs
    assert sc["network_accuracy"] == pytest.approx(
        (info["stated_train_accuracy"] * info["train_pairs"] + info["stated_test_accuracy"] * info["test_pairs"])
        / 113**2)
    assert sol["hidden_agreement_bound"] == pytest.approx(sol["agreement_network"] - (1 - sc["network_accuracy"]))
    assert sc["agreement_hidden"] >= sol["hidden_agreement_bound"] - 1e-9
    assert sol["verdict"] == ("solved" if sol["hidden_agreement_bound"] >= 0.95 else "unsolved")


def test_solve_refuses_other_directories(tmp_path):
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "challenge.json").write_text(json.dumps({"family": "cnn"}))
    with pytest.raises(InterplabError, match="not a pairs challenge"):
        pairs.solve(tmp_path, tmp_path / "s", quiet=True)
    with pytest.raises(InterplabError, match="no challenge.json"):
        pairs.solve(tmp_path / "nothing", tmp_path / "s", quiet=True)
    with pytest.raises(InterplabError, match="needs 'filters'"):
        pairs.solution_table({"op": "and"})
    np.testing.assert_array_equal(pairs.solution_table({"table": ["01", "10"]}), [[0, 1], [1, 0]])
