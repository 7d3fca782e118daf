"""How much an attribution method may have missed: verification order and a subsampling bound.

After AtP* (Kramár et al. 2024, "AtP*: An efficient and scalable method for localizing LLM
behaviour to components", section on diagnostics) one verifies the components with the
largest estimates by activation patching; the question is whether an unverified component
could still have a large effect. The paper answers it by *subsampling*: patch random subsets
of the unverified components together (each drawn with probability ``p``), and estimate each
component's effect as the mean outcome of the subsets that contain it minus the mean of
those that do not. Its upper confidence bound bounds the effect the method may have missed.

- :func:`verification_cost`: how many components one must verify, in the estimate's order,
  to find every component whose true effect reaches a bar (the paper's "cost of verified
  recall"; scale-free, unlike comparing estimates to a bar set by the true effects).
- :func:`subsampling_bound`: the subsampling estimate and upper bound for chosen components.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=1, n_heads=2, d_mlp=None))
    >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
    >>> metric = lambda logits: logits[:, -1, 3].mean()
    >>> cand = {"z": torch.ones(1, 2, 4, dtype=torch.bool)}
    >>> out = subsampling_bound(m, clean, corrupt, metric, cand, n_samples=20, p=0.5, quiet=True)
    >>> out["estimate"]["z"].shape, bool((out["upper"]["z"] >= out["estimate"]["z"].abs()).all())
    (torch.Size([1, 2, 4]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import cache
from interplab.interventions.nodes import Metric, metric_value, node_kind

_PER_POSITION = ("z", "q", "k", "v", "pattern", "resid_pre")


def verification_cost(true: Tensor | dict[str, Tensor], estimate: Tensor | dict[str, Tensor],
                      threshold: float = 0.1) -> dict[str, int]:
    """Verifications, in the estimate's order, until every component with ``|true| >= threshold * max|true|`` is found.

    Returns ``n_above`` (components above the bar), ``cost`` (the rank, 1-based, of the last
    of them in the estimate's order: ``n_above`` is perfect) and ``missed_in_top`` (those not
    among the estimate's top ``n_above``). Grids or dicts of grids by kind, as
    :func:`~interplab.interventions.attribution.agreement` takes.

    Example:
        >>> t = torch.tensor([5.0, 3.0, 0.1, 0.0])
        >>> verification_cost(t, torch.tensor([0.5, 0.0, 0.3, 0.1]))   # a tenth of the size, one swap
        {'n_above': 2, 'cost': 4, 'missed_in_top': 1}
    """
    if isinstance(true, dict):
        check(isinstance(estimate, dict) and set(true) == set(estimate), "true and estimate must have the same kinds.")
        keys = sorted(true)
        t = torch.cat([true[k].flatten() for k in keys])
        e = torch.cat([estimate[k].flatten() for k in keys])
    else:
        check(isinstance(estimate, Tensor) and estimate.shape == true.shape, "true and estimate must have the same shape.")
        t, e = true.flatten(), estimate.flatten()
    t, e = t.abs().double(), e.abs().double()
    above = t >= threshold * t.max()
    n_above = int(above.sum())
    order = e.argsort(descending=True, stable=True)
    ranks = torch.nonzero(above[order]).flatten()
    return {"n_above": n_above, "cost": int(ranks.max()) + 1 if n_above else 0,
            "missed_in_top": int((ranks >= n_above).sum())}


def _hook(kind: str, mask: Tensor, clean: Tensor) -> Any:
    """A hook putting the clean activation where ``mask`` (the per-position grid of one layer) is set."""
    if kind == "resid_pre":  # mask [pos], act [b, pos, d]
        m = mask[None, :, None]
    elif kind == "pattern":  # mask [head, query], act [b, head, query, key]
        m = mask[None, :, :, None]
    else:  # mask [head, pos], act [b, pos, head, d_head]
        m = mask.T[None, :, :, None]
    return lambda act, hook: torch.where(m, clean, act)


def subsampling_bound(model: torch.nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                      candidates: dict[str, Tensor], n_samples: int = 300, p: float = 0.1,
                      confidence: float = 0.9, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """Subsampling estimates and upper confidence bounds of the patching effects of ``candidates``.

    ``candidates``: bool grids by kind (``z``, ``q``, ``k``, ``v``, ``pattern``, ``resid_pre``,
    per position, as :func:`~interplab.interventions.patching.activation_patching` lays them
    out), true for the components to bound (typically those not verified). Each of
    ``n_samples`` forward passes runs the corrupted input with a random subset of them (each
    with probability ``p``, from ``seed``) restored to their clean values. A component's
    ``estimate`` is the mean effect of the subsets holding it minus that of the others;
    ``upper`` adds ``z`` standard errors (one-sided normal quantile at ``confidence``). Returns
    ``estimate``, ``upper`` (grids by kind, NaN outside the candidates), ``max_upper`` and
    ``samples``.

    Example: see the module docstring.
    """
    from scipy.stats import norm

    check(0.0 < p < 1.0, f"p must lie strictly between 0 and 1, got {p}.")
    check(n_samples >= 4, f"n_samples must be at least 4, got {n_samples}.")
    check(set(candidates) <= set(_PER_POSITION),
          f"candidates take the per-position kinds {', '.join(_PER_POSITION)}, got {sorted(candidates)}.")
    specs = {k: node_kind(model, k, per_position=True) for k in candidates}
    sites = sorted({s for spec in specs.values() for s in spec.sites})
    with torch.no_grad():
        _, clean_acts = cache(model, clean, names=sites)
        base = metric_value(metric(model(corrupted)))
    flat = torch.cat([candidates[k].flatten() for k in candidates]).bool()
    n = int(flat.numel())
    check(bool(flat.any()), "No candidate components to bound.")
    g = torch.Generator().manual_seed(seed)
    draws = (torch.rand(n_samples, n, generator=g) < p) & flat
    effects = torch.zeros(n_samples, dtype=torch.float64)
    with torch.no_grad():
        for i in tqdm(range(n_samples), disable=quiet, desc="subsampling"):
            hooks, offset = [], 0
            for kind, grid in candidates.items():
                chosen = draws[i, offset: offset + grid.numel()].view(grid.shape)
                offset += grid.numel()
                for layer, site in enumerate(specs[kind].sites):
                    if bool(chosen[layer].any()):
                        hooks.append((site, _hook(kind, chosen[layer].to(clean_acts[site].device),
                                                  clean_acts[site])))
            out = model.run_with_hooks(corrupted, fwd_hooks=hooks)
            effects[i] = metric_value(metric(out)) - base
    d = draws.double()
    n_in, n_out = d.sum(0), (1 - d).sum(0)
    ok = (n_in >= 2) & (n_out >= 2)
    mean_in = (d * effects[:, None]).sum(0) / n_in.clamp(min=1)
    mean_out = ((1 - d) * effects[:, None]).sum(0) / n_out.clamp(min=1)
    var_in = (d * (effects[:, None] - mean_in) ** 2).sum(0) / (n_in - 1).clamp(min=1)
    var_out = ((1 - d) * (effects[:, None] - mean_out) ** 2).sum(0) / (n_out - 1).clamp(min=1)
    est = mean_in - mean_out
    se = (var_in / n_in.clamp(min=1) + var_out / n_out.clamp(min=1)).sqrt()
    upper = est.abs() + float(norm.ppf(confidence)) * se
    est = torch.where(flat & ok, est, torch.nan)
    upper = torch.where(flat, torch.where(ok, upper, torch.inf), torch.nan)
    out_est, out_up, offset = {}, {}, 0
    for kind, grid in candidates.items():
        out_est[kind] = est[offset: offset + grid.numel()].view(grid.shape).float()
        out_up[kind] = upper[offset: offset + grid.numel()].view(grid.shape).float()
        offset += grid.numel()
    return {"estimate": out_est, "upper": out_up, "max_upper": float(upper[flat].max()), "samples": n_samples}

def missed_effects(model: torch.nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                   true: dict[str, Tensor], estimate: dict[str, Tensor], kinds: Sequence[str], seed: int = 0,
                   quiet: bool = True, verify: float = 0.2, n_samples: int = 1000, p: float = 0.05) -> dict[str, Any]:
    """The AtP* paper's diagnostic: verify the top ``verify`` share of estimates, bound the rest by subsampling.

    ``true`` and ``estimate`` are effect grids by kind (e.g. exhaustive patching and AtP*, as
    :func:`~interplab.interventions.attribution.compare_attribution` returns them). Returns
    the number verified and unverified, the bar (10% of the largest verified true effect), the
    subsampling bound (90% one-sided, :func:`subsampling_bound`) on the unverified components
    (``max_upper``), how many of them it flags (bound at least the bar), and, from the true
    effects, the largest unverified one and how many reach the bar.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.interventions.attribution import compare_attribution
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=1, n_heads=2, d_mlp=None))
        >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
        >>> metric = lambda logits: logits[:, -1, 3].mean()
        >>> r = compare_attribution(m, clean, corrupt, metric, ("z",))
        >>> d = missed_effects(m, clean, corrupt, metric, r["true"], r["atpstar"], ("z",), n_samples=20, p=0.5)
        >>> d["verified"] + d["unverified"]
        8
    """
    e = torch.cat([estimate[k].abs().flatten() for k in kinds])
    n_verify = max(1, int(verify * e.numel()))
    level = e.topk(n_verify).values[-1]
    unverified = {k: estimate[k].abs() < level for k in kinds}
    verified_true = torch.cat([torch.where(unverified[k], 0.0, true[k].abs()).flatten() for k in kinds])
    bar = 0.1 * float(verified_true.max())
    out = subsampling_bound(model, clean, corrupted, metric, unverified, n_samples=n_samples, p=p, seed=seed,
                            quiet=quiet)
    up = torch.cat([out["upper"][k].flatten() for k in kinds])
    t_unv = torch.cat([true[k].abs()[unverified[k]] for k in kinds])
    flat_unv = torch.cat([unverified[k].flatten() for k in kinds])
    return {"verified": n_verify, "unverified": int(flat_unv.sum()), "bar": bar, "max_upper": out["max_upper"],
            "flagged": int((up[flat_unv] >= bar).sum()), "true_max_unverified": float(t_unv.max()),
            "true_above_bar_unverified": int((t_unv >= bar).sum()), "samples": n_samples, "p": p}


__all__ = ["verification_cost", "subsampling_bound", "missed_effects"]
