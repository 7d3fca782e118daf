"""Property-based tests of the argument forms that recur across the API (issue 17).

Every accepted form of an argument must mean the same thing everywhere: readout positions,
site-name filters, units, bases, batch sizes and input dtypes. Each property compares the
library's answer with one computed independently (slicing a full forward pass, an explicit
hook, a QR projection).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interplab.instrument import cache, predict, run_batches, site_values, trace
from interplab.interventions.ablate import ablate, replace_coordinates
from interplab.models import MLP, MLPConfig, Transformer, TransformerConfig, readout_positions

N_CTX = 5
TF = Transformer(TransformerConfig(d_vocab=6, n_ctx=N_CTX, d_model=8, n_layers=2, n_heads=2, d_mlp=16), seed=3)
TOKENS = torch.randint(6, (3, N_CTX), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    FULL = TF(TOKENS)
NET = MLP(MLPConfig(d_in=3, d_hidden=(6, 5), d_out=2), seed=4)
X = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
HIDDEN = "layers.0.hook_post"
ORDER = ["hook_input", "layers.0.hook_pre", "layers.0.hook_post", "layers.1.hook_pre", "layers.1.hook_post",
         "hook_logits"]  # the order a forward pass of NET reaches its sites

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def position_forms(draw):
    """(positions in some accepted form, the positions they mean in 0..n-1)."""
    idx = draw(st.lists(st.integers(-N_CTX, N_CTX - 1), min_size=1, max_size=6))
    forms = [list(idx), tuple(idx), torch.tensor(idx), np.array(idx)]
    if len(idx) == 1:
        forms += [idx[0], np.int64(idx[0]), torch.tensor(idx[0])]
    return draw(st.sampled_from(forms)), [i % N_CTX for i in idx]


@SETTINGS
@given(position_forms())
def test_positions_mean_the_same_everywhere(form):
    positions, meant = form
    assert readout_positions(positions, N_CTX).tolist() == meant
    with torch.no_grad():
        torch.testing.assert_close(TF(TOKENS, positions=positions), FULL[:, meant], atol=1e-5, rtol=0)
        resid = site_values(TF, TOKENS, "blocks.1.hook_resid_post", positions=positions)
        full_resid = site_values(TF, TOKENS, "blocks.1.hook_resid_post")
    torch.testing.assert_close(resid, full_resid[:, meant], atol=1e-5, rtol=0)


@st.composite
def name_filters(draw):
    """(a filter in some accepted form, the set of sites it selects)."""
    names = list(NET.hook_dict)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    forms = [list(chosen), tuple(chosen), set(chosen), frozenset(chosen), (n for n in chosen),
             iter(chosen), dict.fromkeys(chosen).keys(), lambda n: n in chosen]
    if len(chosen) == 1:
        forms.append(chosen[0])
    return draw(st.sampled_from(forms)), set(chosen)


@SETTINGS
@given(name_filters(), st.booleans())
def test_name_filters_select_the_same_sites(form, use_trace):
    names, chosen = form
    if use_trace:
        tr = trace(NET, X, names=names)
        seen = [s.name for s in tr]
        assert seen == [n for n in ORDER if n in chosen]
    else:
        _, acts = cache(NET, X, names=names)
        assert set(acts) == chosen


@st.composite
def unit_forms(draw):
    """(units in some accepted form, the units they mean in 0..d-1), for the hidden layer of width 6."""
    d = 6
    idx = draw(st.lists(st.integers(-d, d - 1), min_size=1, max_size=8))
    meant = sorted({i % d for i in idx})
    forms = [list(idx), tuple(idx), torch.tensor(idx), np.array(idx), {i % d for i in idx},
             torch.tensor([i in meant for i in range(d)])]
    if len(idx) == 1:
        forms.append(idx[0])
    if meant == list(range(meant[0], meant[-1] + 1)):
        forms.append(range(meant[0], meant[-1] + 1))
    return draw(st.sampled_from(forms)), meant


@SETTINGS
@given(unit_forms())
def test_units_mean_the_same_everywhere(form):
    units, meant = form

    def zero_by_hand(act, hook):
        act = act.clone()
        act[:, meant] = 0.0
        return act

    with torch.no_grad():
        want = NET.run_with_hooks(X, fwd_hooks=[(HIDDEN, zero_by_hand)])
        torch.testing.assert_close(ablate(NET, X, HIDDEN, "zero", units=units), want, atol=1e-6, rtol=0)


@SETTINGS
@given(st.integers(1, 5), st.integers(0, 2**16), st.sampled_from([torch.float32, torch.float64]))
def test_basis_ablation_depends_only_on_the_span(k, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    d = 6
    basis = torch.randn(d, k, generator=g, dtype=torch.float64)
    mix = torch.randn(k, k, generator=g, dtype=torch.float64) + 3 * torch.eye(k, dtype=torch.float64)  # invertible
    x = torch.randn(4, d, generator=g, dtype=torch.float64).to(dtype)
    q, _ = torch.linalg.qr(basis)
    want = x.double() - (x.double() @ q) @ q.T  # the part of x orthogonal to the span
    zeros = torch.zeros(4, k, dtype=dtype)
    for b in (basis, basis @ mix, q):
        out = replace_coordinates(x, zeros, basis=b.to(dtype))
        assert out.dtype == dtype
        tol = 1e-3 if dtype == torch.float32 else 1e-9  # float32 through a mixed, conditioned basis
        torch.testing.assert_close(out.double(), want, atol=tol, rtol=0)


@SETTINGS
@given(st.integers(1, 10))
def test_batch_size_does_not_change_results(batch_size):
    with torch.no_grad():
        torch.testing.assert_close(site_values(NET, X, HIDDEN, batch_size=batch_size), NET.run_with_cache(X)[1][HIDDEN])
        assert predict(NET, X, batch_size=batch_size).tolist() == NET(X).argmax(-1).tolist()
        seen = [r for r, _ in run_batches(NET, X, batch_size=batch_size)]
    assert [i for r in seen for i in range(len(X))[r]] == list(range(len(X)))
    assert all(r.stop - r.start <= batch_size for r in seen)


@SETTINGS
@given(st.sampled_from([torch.int64, torch.int32, torch.int16, torch.uint8]), position_forms())
def test_token_dtypes_give_the_same_logits(dtype, form):
    positions, meant = form
    with torch.no_grad():
        torch.testing.assert_close(TF(TOKENS.to(dtype), positions=positions), FULL[:, meant], atol=1e-5, rtol=0)
