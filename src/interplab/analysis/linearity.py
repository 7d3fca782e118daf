"""Lookup tables and linear structure: how non-linearly a layer combines two inputs.

A network that memorises arbitrary facts about pairs ``(a, b)`` (a lookup table) must combine
``a`` and ``b`` non-linearly: a representation that stays a sum ``f(a, b) = u(a) + v(b)`` only
lets a linear readout compute sums of per-token terms. Three measurements of that, on a table
of activations over all pairs ``T[a, b, ...]`` (or on a dataset with binary features):

- **non-linear excess** of a unit on binary features A, B:
  ``E[f|A,B] - E[f|~A,B] - E[f|A,~B] + E[f|~A,~B]``; zero for any unit that is a sum of a
  function of A and a function of B, 1 for ``f = A AND B``. :func:`nonlinear_excess` on a
  dataset, :func:`nonlinear_excess_table` for every feature pair ``A = (a == i), B = (b == j)``
  of a table at once;
- **breaking of linear structure** (:func:`linearity_break`): for random ``A1 != A2, B1 != B2``
  the distance between the midpoints of ``f(A1 B1), f(A2 B2)`` and of ``f(A1 B2), f(A2 B1)``
  (zero for an additive table), divided by the same distance for four random pairs; compare a
  trained layer with the same layer of a randomly initialised network;
- **correlation of ablation effects across facts** (:func:`ablation_effect_correlation`):
  if neurons each store their own facts, the effects of ablating each neuron on two facts
  are uncorrelated; a shared mechanism makes them correlate.

From Nanda, Rajamanoharan, Kramar & Shah (2023), "Fact Finding" (Alignment Forum), post 3
("Trying to Mechanistically Understand Early MLPs") and post 4 ("How to Think About
Interpreting Memorisation", its toy models).

Example:
    >>> import torch
    >>> u, v = torch.tensor([0.0, 2.0, 5.0]), torch.tensor([1.0, -1.0, 4.0])
    >>> additive = (u[:, None] + v[None, :])[..., None]           # [a, b, 1]
    >>> bool((nonlinear_excess_table(additive) == 0).all())
    True
    >>> AND = torch.zeros(3, 3, 1); AND[0, 0] = 1.0
    >>> nonlinear_excess_table(AND)[0, 0].item()
    1.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from interplab.errors import check


def nonlinear_excess(acts: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Non-linear excess of every unit on the binary features ``a``, ``b`` of a dataset.

    ``acts``: ``[N, ...]`` unit values; ``a``, ``b``: ``[N]`` booleans. Returns ``[...]``:
    ``E[f|a,b] - E[f|~a,b] - E[f|a,~b] + E[f|~a,~b]``. Raises if one of the four groups is
    empty.

    Example:
        >>> import torch
        >>> a = torch.tensor([0, 0, 1, 1, 1]).bool(); b = torch.tensor([0, 1, 0, 1, 1]).bool()
        >>> f = torch.stack([(a & b).float(), 3 * a.float() - b.float()], 1)   # AND, linear
        >>> nonlinear_excess(f, a, b).tolist()
        [1.0, 0.0]
    """
    a, b = a.reshape(-1).bool(), b.reshape(-1).bool()
    check(len(a) == len(acts) and len(b) == len(acts), f"a and b must have one entry per row of acts ({len(acts)}).")
    out = torch.zeros(acts.shape[1:], dtype=acts.dtype, device=acts.device)
    for mask, sign in ((a & b, 1), (~a & b, -1), (a & ~b, -1), (~a & ~b, 1)):
        check(bool(mask.any()), "Each of the four groups (A and B, not A and B, A and not B, neither) needs an example.")
        out = out + sign * acts[mask].mean(0)
    return out


def nonlinear_excess_table(table: Tensor) -> Tensor:
    """Non-linear excess of each unit for every feature pair ``A = (a == i), B = (b == j)``.

    ``table``: ``[n_a, n_b, ...]``, a unit's value on every pair (one example per pair, as in a
    lookup table). Returns ``[n_a, n_b, ...]`` (excess at ``[i, j]``). Computed as one
    integer-weighted sum divided once, so a table of integers that is a sum ``u[a] + v[b]``
    gives exactly zero. Needs ``n_a, n_b >= 2``.

    Example: see the module docstring.
    """
    check(table.dim() >= 2 and table.shape[0] >= 2 and table.shape[1] >= 2,
          f"The table needs shape [n_a >= 2, n_b >= 2, ...], got {tuple(table.shape)}.")
    T = table
    na, nb = T.shape[0], T.shape[1]
    R = T.sum(1, keepdim=True)  # row sums (fixed a)
    C = T.sum(0, keepdim=True)  # column sums (fixed b)
    S = T.sum((0, 1), keepdim=True)
    # each mean times (na - 1)(nb - 1): E[f|A,B], E[f|~A,B], E[f|A,~B], E[f|~A,~B]
    num = (na - 1) * (nb - 1) * T - (nb - 1) * (C - T) - (na - 1) * (R - T) + (S - R - C + T)
    return num / ((na - 1) * (nb - 1))


def interaction_fraction(table: Tensor) -> Tensor:
    """Share of each unit's variance over all pairs that is not additive in ``a`` and ``b``.

    The two-way decomposition ``T[a, b] = m + r[a] + c[b] + I[a, b]`` (row, column and
    interaction terms); returns ``sum I^2 / sum (T - m)^2`` per unit, in ``[0, 1]`` (0 for
    ``u[a] + v[b]``, 0.6 for an AND of one value of ``a`` and one of ``b`` in a 4x4 table;
    units constant over pairs give 0). The interaction term is the non-linear excess up to a
    factor: ``excess[i, j] = I[i, j] n_a n_b / ((n_a - 1)(n_b - 1))``.

    Example:
        >>> import torch
        >>> AND = torch.zeros(4, 4, 1); AND[0, 0] = 1.0
        >>> add = torch.arange(4.0)[:, None, None] + torch.arange(4.0)[None, :, None]
        >>> [round(x, 4) for x in interaction_fraction(torch.cat([AND, add], -1)).tolist()]
        [0.6, 0.0]
    """
    check(table.dim() >= 2 and table.shape[0] >= 2 and table.shape[1] >= 2,
          f"The table needs shape [n_a >= 2, n_b >= 2, ...], got {tuple(table.shape)}.")
    T = table.double()
    m = T.mean((0, 1), keepdim=True)
    inter = T - T.mean(0, keepdim=True) - T.mean(1, keepdim=True) + m
    total = (T - m).pow(2).sum((0, 1))
    return torch.where(total > 1e-12 * T.pow(2).sum((0, 1)).clamp(min=1e-30),
                       inter.pow(2).sum((0, 1)) / total.clamp(min=1e-30), torch.zeros_like(total)).to(table.dtype)


def linearity_break(table: Tensor, n_samples: int = 2000, generator: torch.Generator | None = None
                    ) -> dict[str, float]:
    """How much a representation of pairs breaks the linear (additive) structure.

    ``table``: ``[n_a, n_b, ...]``, the representation of every pair (extra axes flattened).
    Samples ``n_samples`` quadruples ``A1 != A2, B1 != B2`` and measures
    ``|| (f(A1B1) + f(A2B2)) / 2 - (f(A1B2) + f(A2B1)) / 2 ||`` (``midpoint``), and the same
    for four distinct random pairs (``random``). Returns ``{"ratio": midpoint / random,
    "midpoint": ..., "random": ...}`` (means over the samples). ``ratio`` is 0 for an
    additive table and near 1 when the pairs' representations are unrelated.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> u, v = torch.randn(6, 4, generator=g), torch.randn(5, 4, generator=g)
        >>> linearity_break(u[:, None] + v[None], 200, g)["ratio"] < 1e-6
        True
        >>> linearity_break(torch.randn(6, 5, 4, generator=g), 200, g)["ratio"] > 0.5
        True
    """
    check(table.dim() >= 2 and table.shape[0] >= 2 and table.shape[1] >= 2,
          f"The table needs shape [n_a >= 2, n_b >= 2, ...], got {tuple(table.shape)}.")
    check(n_samples >= 1, f"n_samples must be at least 1, got {n_samples}.")
    na, nb = table.shape[0], table.shape[1]
    check(na * nb >= 4, "linearity_break needs at least 4 pairs.")
    T = table.reshape(na, nb, -1).double()
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    a1 = torch.randint(na, (n_samples,), generator=g)
    a2 = (a1 + torch.randint(1, na, (n_samples,), generator=g)) % na
    b1 = torch.randint(nb, (n_samples,), generator=g)
    b2 = (b1 + torch.randint(1, nb, (n_samples,), generator=g)) % nb
    mid = ((T[a1, b1] + T[a2, b2]) - (T[a1, b2] + T[a2, b1])).norm(dim=-1) / 2
    flat = T.reshape(na * nb, -1)
    # four distinct random pairs per sample: the first k of a random permutation (argsort of noise)
    idx = torch.rand(n_samples, na * nb, generator=g).argsort(-1)[:, :4]
    rnd = ((flat[idx[:, 0]] + flat[idx[:, 1]]) - (flat[idx[:, 2]] + flat[idx[:, 3]])).norm(dim=-1) / 2
    check(bool(rnd.mean() > 0), "All pairs have the same representation; the ratio is undefined.")
    return {"ratio": float(mid.mean() / rnd.mean()), "midpoint": float(mid.mean()), "random": float(rnd.mean())}


def ablation_effect_correlation(effects: Tensor) -> dict[str, Any]:
    """Correlation across facts of the effects of ablating each unit.

    ``effects``: ``[n_units, n_facts]``, e.g. the change in each fact's correct-answer
    log-probability when each neuron is ablated. Returns ``{"matrix": [n_facts, n_facts]
    Pearson correlations (Tensor), "mean_offdiag": mean over distinct facts,
    "mean_abs_offdiag": mean absolute value}``. Facts whose effects do not vary over units
    have undefined correlations; they are left out of the means (NaN in the matrix).

    Example:
        >>> import torch
        >>> e = torch.tensor([[1.0, 2.0, -1.0], [2.0, 4.0, -2.0], [0.0, 0.0, 0.0]])
        >>> r = ablation_effect_correlation(e)
        >>> [round(x, 3) for x in r["matrix"][0].tolist()], round(r["mean_offdiag"], 3)
        ([1.0, 1.0, -1.0], -0.333)
    """
    check(effects.dim() == 2 and effects.shape[0] >= 2 and effects.shape[1] >= 2,
          f"effects must have shape [n_units >= 2, n_facts >= 2], got {tuple(effects.shape)}.")
    E = effects.double()
    E = E - E.mean(0, keepdim=True)
    norms = E.norm(dim=0)
    M = (E.T @ E) / (norms[:, None] * norms[None, :])
    off = ~torch.eye(M.shape[0], dtype=torch.bool, device=M.device)
    vals = M[off & ~M.isnan()]
    check(len(vals) > 0, "No two facts have effects that vary over units; correlations are undefined.")
    return {"matrix": M, "mean_offdiag": float(vals.mean()), "mean_abs_offdiag": float(vals.abs().mean())}


__all__ = ["nonlinear_excess", "nonlinear_excess_table", "interaction_fraction", "linearity_break", "ablation_effect_correlation"]
