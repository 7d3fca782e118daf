"""The toy-models-of-superposition study: quick mode end to end, reuse of runs, the command."""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from interplab.analysis import superposition as sp
from interplab.errors import InterplabError
from interplab.studies import tms

TINY = tms.Settings(
    geometry_sparsity=(0.0, 0.9), geometry_restarts=2, geometry_steps=200,
    phase_grid=3, phase_restarts=1, phase_steps=100,
    dim_features=12, dim_hidden=3, dim_points=4, dim_steps=100,
    finite_features=10, finite_T=(3, 50), finite_steps=100, steps_per_epoch=50,
)
VOCAB = re.compile("^(" + "|".join(t.replace("{k}", r"\d+").replace("{c}", r"\d+")
                                   for t in sp.GEOMETRY_VOCABULARY) + ")$")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("tms_quick")
    return out, tms.run(out, quick=True, quiet=True)


@pytest.mark.slow
def test_quick_study_reproduces_the_known_pictures(quick):
    out, res = quick
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 6 and "Phase diagram" in html
    for s in tms.QUICK.geometry_sparsity:
        for part in res[tms._key(s)].split(", "):
            assert VOCAB.match(part), part
    # 1. dense: top two features orthogonal, the rest absent; S=0.8 antipodal pairs; S=0.9 pentagon
    assert res["geometry_s0"] == "2 orthogonal, 3 absent"
    assert "antipodal pair" in res["geometry_s0p8"]
    assert res["geometry_s0p9"] == "pentagon"
    # 2. phase diagram: all three regions, where the published diagram has them
    pd = res["phase_diagram"]
    G = len(pd["importance"])
    assert len(pd["sparsity"]) == G and [len(row) for row in pd["cells"]] == [G] * G
    where = {p: [(i, j) for i in range(G) for j in range(G) if pd["cells"][i][j] == p] for p in sp.PHASES}
    assert all(where[p] for p in ("absent", "dedicated", "antipodal"))

    def mean(p, axis):  # mean log10 importance (axis 0) or density (axis 1) of a region
        vals = [math.log10(pd["importance"][i]) if axis == 0 else math.log10(1 - pd["sparsity"][j])
                for i, j in where[p]]
        return sum(vals) / len(vals)

    assert mean("absent", 0) < 0 < mean("dedicated", 0)  # low vs high importance
    assert mean("antipodal", 1) < mean("absent", 1) and mean("antipodal", 1) < mean("dedicated", 1)  # sparser
    assert pd["cells"][0][0] == "absent" and pd["cells"][G - 1][0] == "dedicated" and pd["cells"][G // 2][G - 1] == "antipodal"
    # 3. dimensions per feature sticks at 1 and 1/2
    assert any(abs(p - 1) < 0.05 for p in res["plateaus"]) and any(abs(p - 0.5) < 0.05 for p in res["plateaus"])
    # 4. few points: the data points own large fractions of the plane; many: the features do
    dp, ft = res["finite_datapoint_dim_max"], res["finite_feature_dim_max"]
    assert dp[0] > 0.3 > dp[-1] and ft[-1] > 0.25 and ft[-1] > 10 * dp[-1]


def test_tiny_study_writes_the_contract_and_reuses_its_runs(tmp_path, capsys):
    res = tms.run(tmp_path, quiet=True, settings=TINY)
    printed = capsys.readouterr().out
    assert "report:" in printed and "S=0.9:" in printed
    for key in ("geometry_s0", "geometry_s0p9", "phase_diagram", "plateaus"):
        assert key in res
    assert set(res["phase_diagram"]) == {"sparsity", "importance", "cells"}
    assert all(c in sp.PHASES for row in res["phase_diagram"]["cells"] for c in row)
    assert all(isinstance(p, float) for p in res["plateaus"])
    assert len(res["finite_datapoint_geometry"]) == 2
    again = tms.run(tmp_path, quiet=True, settings=TINY)  # finished runs are reused: same numbers
    for key in res:
        if key != "seconds":
            assert again[key] == res[key], key
    with pytest.raises(InterplabError, match="other settings"):
        tms.run(tmp_path, quiet=True, settings=TINY.__class__(**{**TINY.__dict__, "geometry_steps": 300}))


def test_geometry_keys():
    assert [tms._key(s) for s in (0.0, 0.7, 0.8, 0.9, 0.97)] == [
        "geometry_s0", "geometry_s0p7", "geometry_s0p8", "geometry_s0p9", "geometry_s0p97"]


def test_command_is_registered():
    from interplab import cli

    cli._register()
    result = CliRunner().invoke(cli.app, ["study", "tms", "--help"])
    assert result.exit_code == 0
    assert "--quick" in result.output and "--out" in result.output
