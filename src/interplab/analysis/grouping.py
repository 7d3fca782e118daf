"""Unit grouping: dead units, and clusters of units that detect the same thing.

A unit is *dead* when it is never active on the data (its activation never exceeds ``eps``).
The others are clustered by their *activation profile* (each unit's activations over the
inputs, standardized, so units that fire on the same inputs land together), optionally
joined by extra per-unit features (e.g. a unit's weight on the logit-difference direction),
with k-means from a fixed seed. Groups are numbered by decreasing size; dead units get -1.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.rand(100, generator=g), torch.rand(100, generator=g)
    >>> acts = torch.stack([a, 2 * a, a + 0.01, b, 3 * b, torch.zeros(100)], 1)  # [inputs, units]
    >>> group_units(acts, n_groups=2).tolist()
    [0, 0, 0, 1, 1, -1]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from interplab.errors import check


def dead_units(acts: Tensor, eps: float = 0.0) -> Tensor:
    """Boolean ``[units]``: True where the unit never exceeds ``eps`` on any input ``[N, units]``.

    Example:
        >>> dead_units(torch.tensor([[0.0, 1.0], [0.0, 0.0]])).tolist()
        [True, False]
    """
    check(acts.dim() == 2, f"acts must be [inputs, units], got shape {tuple(acts.shape)}.")
    return (acts <= eps).all(0)


def activation_profiles(acts: Tensor) -> Tensor:
    """Each unit's standardized activations over the inputs, ``[units, N]`` (zero rows for constants).

    Example:
        >>> activation_profiles(torch.tensor([[0.0, 1.0], [2.0, 1.0]])).tolist()
        [[-1.0, 1.0], [0.0, 0.0]]
    """
    x = acts.double().T
    x = x - x.mean(1, keepdim=True)
    std = x.pow(2).mean(1, keepdim=True).sqrt()
    return torch.where(std > 0, x / std.clamp(min=1e-12), torch.zeros_like(x)).float()


def group_units(
    acts: Tensor,
    n_groups: int = 2,
    features: Tensor | None = None,
    feature_weight: float = 1.0,
    eps: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """Group id per unit (``[units]``; -1 = dead): k-means on activation profiles (+ ``features``).

    ``features`` ``[units, f]`` are standardized per column and scaled so that, together,
    they weigh ``feature_weight`` times as much as the activation profile.

    Example: see the module docstring.
    """
    from sklearn.cluster import KMeans

    dead = dead_units(acts, eps)
    alive = (~dead).nonzero().reshape(-1)
    check(len(alive) >= n_groups, f"Only {len(alive)} units are ever active; cannot form {n_groups} groups.")
    prof = activation_profiles(acts[:, alive]).double().cpu().numpy()
    prof = prof / np.sqrt(prof.shape[1])  # each row has unit norm (or zero)
    if features is not None:
        f = torch.as_tensor(features, dtype=torch.float64).cpu()[alive.cpu()].numpy()
        f = f.reshape(len(alive), -1)
        f = (f - f.mean(0)) / np.where(f.std(0) > 0, f.std(0), 1.0)
        f = f * feature_weight / np.sqrt(f.shape[1])
        prof = np.concatenate([prof, f], 1)
    n_distinct = len(np.unique(prof.round(9), axis=0))
    check(n_distinct >= n_groups, f"The active units have only {n_distinct} distinct activation profiles; cannot form "
                                  f"{n_groups} groups.")
    km = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit(prof)
    raw = km.labels_
    sizes = np.bincount(raw, minlength=n_groups)
    order = np.argsort(-sizes, kind="stable")  # renumber by decreasing size
    rank = np.empty(n_groups, dtype=np.int64)
    rank[order] = np.arange(n_groups)
    out = torch.full((acts.shape[1],), -1, dtype=torch.long)
    out[alive.cpu()] = torch.as_tensor(rank[raw], dtype=torch.long)
    return out


def groups_by_selectivity(acts: Tensor, group_ids: Tensor, region: Tensor) -> dict[str, Tensor]:
    """Name three unit groups by how selective they are for a region of the inputs.

    ``acts`` [N, units]; ``group_ids`` [units] from :func:`group_units` with 3 groups (-1: dead);
    ``region`` [N] bool. A group's selectivity is ``(m_in - m_out) / (m_in + m_out)`` of its mean
    activation inside and outside the region. Returns unit indices: ``a`` (most selective for the
    region), ``b`` (most selective against it), ``other`` and ``dead``.

    Example:
        >>> acts = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
        >>> g = groups_by_selectivity(acts, torch.tensor([0, 1, 2, -1]), torch.tensor([True, False]))
        >>> {k: v.tolist() for k, v in g.items()}
        {'a': [0], 'b': [1], 'other': [2], 'dead': [3]}
    """
    stats = []
    for k in range(3):
        members = (group_ids == k).nonzero().reshape(-1)
        m_hi = float(acts[region][:, members].mean()) if region.any() and len(members) else 0.0
        m_lo = float(acts[~region][:, members].mean()) if (~region).any() and len(members) else 0.0
        stats.append((members, (m_hi - m_lo) / (m_hi + m_lo + 1e-9)))
    by_sel = sorted(stats, key=lambda s: s[1])
    return {"a": by_sel[-1][0], "b": by_sel[0][0], "other": by_sel[1][0],
            "dead": (group_ids == -1).nonzero().reshape(-1)}


__all__ = ["dead_units", "activation_profiles", "group_units", "groups_by_selectivity"]
