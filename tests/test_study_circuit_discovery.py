"""The circuit-discovery study: every method on one small case, the report, and the CLI registration."""

import torch
from typer.testing import CliRunner

from interplab.cli import _register, app
from interplab.interventions.edges import Graph
from interplab.models import Transformer, TransformerConfig
from interplab.studies import circuit_discovery as cd


def _case():
    m = Transformer(TransformerConfig(d_vocab=7, n_ctx=5, d_model=16, n_layers=2, n_heads=2, d_mlp=None,
                                      normalization="LN"), seed=0)
    g = torch.Generator().manual_seed(0)
    clean, corrupt = torch.randint(7, (6, 5), generator=g), torch.randint(7, (6, 5), generator=g)

    def metric(logits):
        return logits[:, -1, 2].mean() - logits[:, -1, 3].mean()

    return cd.Case("tiny", m, clean, corrupt, metric, [-1], None, {"test_acc": 0.0})


def test_evaluate_case_scores_every_method():
    s = cd.Settings(n_prompts=6, ig_steps=2, sweep=(0.0, 1e9), kl_sweep=(0.0, 1e9))
    case = _case()
    e = cd.evaluate_case(case, s, quiet=True)
    graph = Graph.from_model(case.model)
    # known circuit from single-edge patching: edges with at least 10% of the largest effect
    eff = e["effects"]
    assert torch.equal(e["known"], graph.allowed & (eff.abs() >= 0.1 * eff.abs().max()))
    for m in cd.METHODS:
        assert 0.0 <= e["recall"][m] <= 1.0 and 0.0 <= e["precision"][m] <= 1.0 and e["seconds"][m] > 0
    # the sweep: threshold 0 keeps a faithful circuit, an enormous threshold keeps nothing
    (t0, n0, _, r0, f0), (t1, n1, _, r1, f1) = e["sweep"]
    assert n0 > 0 and f0 > 0.99 and n1 == 0 and r1 == 0.0
    assert e["faithfulness"]["known"] > 0.5
    # the KL sweep, precision-recall curves over every score threshold, recall of the top |known| edges
    assert [row[0] for row in e["sweep_kl"]] == [0.0, 1e9] and e["sweep_kl"][0][1] > 0 == e["sweep_kl"][1][1]
    for m in ("eap", "eap_qk", "eap_ig", "single_edge"):
        prec, rec = e["pr"][m]
        assert rec[0] == 1.0 and rec[-1] == 0.0 and 0.0 <= float(prec.min()) <= 1.0
        assert 0.0 <= e["recall_at_known_size"][m] <= 1.0 and 0.0 <= e["precision_at_recall_90"][m] <= 1.0
    # the known circuit here is the top single-edge effects, so ranking by them recovers it exactly
    assert e["recall_at_known_size"]["single_edge"] == 1.0 and e["precision_at_recall_90"]["single_edge"] == 1.0
    fig = cd.draw_circuit(graph, e["known"], eff)
    assert fig.axes


def test_study_is_registered():
    _register()
    res = CliRunner().invoke(app, ["study", "--help"])
    assert res.exit_code == 0 and "circuit-discovery" in res.output
