import itertools

import numpy as np
import pytest

from interplab.analysis.rules import Rule, fit_score_rule, search_rules
from interplab.analysis.templates import similarity


def brute_force(s, y):
    cuts = np.concatenate([[-np.inf], np.unique(s) + 1e-9])
    best = 0.0
    for lo, hi in itertools.combinations_with_replacement(cuts, 2):
        inside = (s > lo) & (s <= hi)
        best = max(best, (inside == y).mean(), (~inside == y).mean())
    for t in cuts:
        best = max(best, ((s > t) == y).mean(), ((s <= t) == y).mean())
    return best


@pytest.mark.parametrize("seed", range(6))
def test_fit_score_rule_is_exact(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=40), 1)  # ties included
    y = rng.integers(0, 2, size=40)
    kind, lo, hi, agree = fit_score_rule(s, y, simplicity=0.0)
    assert agree == pytest.approx(brute_force(s, y))
    assert Rule("x", np.zeros((28, 28), np.uint8), "none", kind, lo, hi).predict_scores(s).tolist() == \
        (Rule("x", np.zeros((28, 28), np.uint8), "none", kind, lo, hi).predict_scores(s) == 1).astype(int).tolist()


def test_fit_score_rule_finds_each_form():
    s = np.linspace(-1, 1, 101)
    assert fit_score_rule(s, (s > 0.2).astype(int))[:1] == ("threshold",)
    assert fit_score_rule(s, (s < -0.3).astype(int))[0] == "threshold"
    kind, lo, hi, agree = fit_score_rule(s, ((s > -0.5) & (s < 0.4)).astype(int))
    assert (kind, agree) == ("band", 1.0) and lo == pytest.approx(-0.5, abs=0.02) and hi == pytest.approx(0.4, abs=0.02)
    kind, lo, hi, agree = fit_score_rule(s, ((s < -0.5) | (s > 0.4)).astype(int))
    assert (kind, agree) == ("two-sided", 1.0)


def test_simplicity_prefers_threshold_when_close():
    s = np.linspace(0, 1, 1000)
    y = (s > 0.5).astype(int)
    y[-1] = 0  # a band would fit one more point
    assert fit_score_rule(s, y, simplicity=0.0)[0] == "band"
    assert fit_score_rule(s, y, simplicity=0.002)[0] == "threshold"


def test_search_picks_the_true_template_and_the_source_is_exact():
    rng = np.random.default_rng(0)
    images = (rng.random((600, 28, 28)) ** 3 * 255).astype(np.uint8)
    true_t = np.zeros((28, 28), np.uint8)
    true_t[6:22, 12:16] = 255
    s = similarity(images, true_t, "mid")
    labels = ((s > np.quantile(s, 0.2)) & (s < np.quantile(s, 0.7))).astype(int)
    decoy = np.zeros((28, 28), np.uint8)
    decoy[12:16, 6:22] = 255
    rules = search_rules(images, labels, {"decoy": decoy, "true": true_t, "noise": rng.random((28, 28))})
    best = rules[0]
    assert (best.template_name, best.center, best.kind, best.agree) == ("true", "mid", "band", 1.0)
    assert rules[-1].agree < 0.9
    ns = {}
    exec(best.source(), ns)
    assert (ns["rule"](images) == best.predict(images)).all()
    assert ns["rule"](images).dtype == np.int64


@pytest.mark.parametrize("center", ["none", "mean", "mid"])
@pytest.mark.parametrize("kind,lo,hi", [("threshold", 3.0, None), ("threshold", None, 3.0), ("band", -2.0, 4.0),
                                        ("two-sided", -2.0, 4.0)])
def test_every_rule_form_prints_as_exact_source(kind, lo, hi, center):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(200, 28, 28)).astype(np.uint8)
    template = rng.integers(0, 256, size=(28, 28)).astype(np.uint8)
    s = similarity(images, template, center)
    shift = float(np.median(s))
    rule = Rule("t", template, center, kind, None if lo is None else lo + shift, None if hi is None else hi + shift)
    ns = {}
    exec(rule.source(), ns)
    got = ns["rule"](images)
    assert (got == rule.predict(images)).all() and 0 < got.mean() < 1
