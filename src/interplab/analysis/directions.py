"""Decision directions and thresholds: fit "class 1 iff v_i . x > t_i for all i" (or any i).

- :func:`best_threshold`: the threshold along one direction that best reproduces a labeling;
- :func:`fit_threshold_rule`: directions and thresholds of an AND (or OR) of half-spaces,
  fitted from activations against labels (a soft AND trained by gradient descent from a few
  seeded starts, then exact threshold refinement); the result is a :class:`ThresholdRule`;
- :func:`readout_basis`: a full basis whose first coordinates are the readouts ``v_i . x``,
  the rest an orthonormal basis of their complement (ordered by variance), for scrubbing.

Example:
    >>> import torch
    >>> x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    >>> y = (x[:, 0] > 0.3) & (x[:, 1] - x[:, 2] > -0.5)
    >>> rule = fit_threshold_rule(x, y, restarts=2, steps=150, seed=0)
    >>> rule.agreement(x, y) > 0.97
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from interplab.errors import check
from interplab.instrument import cache

OPS = ("and", "or")


def best_threshold(values: Tensor, target: Tensor) -> tuple[float, float]:
    """Threshold ``t`` maximizing agreement of ``values > t`` with ``target``; returns ``(t, agreement)``.

    Example:
        >>> import torch
        >>> t, agree = best_threshold(torch.tensor([0.1, 0.4, 0.6, 0.9]), torch.tensor([0, 0, 1, 1]))
        >>> round(t, 6), agree
        (0.5, 1.0)
    """
    v = values.reshape(-1).double()
    y = target.reshape(-1).bool()
    check(len(v) == len(y) and len(v) > 0, "values and target must be non-empty and of equal length.")
    order = torch.argsort(v)
    vs, ys = v[order], y[order].double()
    # threshold below position i: predicted true for sorted indices >= i
    neg_below = torch.cat([ys.new_zeros(1), torch.cumsum(1 - ys, 0)])
    pos_above = ys.sum() - torch.cat([ys.new_zeros(1), torch.cumsum(ys, 0)])
    score = neg_below + pos_above
    # only cut between distinct values
    valid = torch.ones(len(v) + 1, dtype=torch.bool, device=v.device)
    valid[1:-1] = vs[1:] > vs[:-1]
    score = torch.where(valid, score, torch.full_like(score, -1))
    i = int(score.argmax())
    if i == 0:
        t = float(vs[0]) - 1.0
    elif i == len(v):
        t = float(vs[-1]) + 1.0
    else:
        t = float((vs[i - 1] + vs[i]) / 2)
    return t, float(score[i] / len(v))


@dataclass
class ThresholdRule:
    """``op`` over ``directions[i] . x > thresholds[i]``; directions ``[m, d]``, thresholds ``[m]``."""

    directions: Tensor
    thresholds: Tensor
    op: str = "and"

    def values(self, x: Tensor) -> Tensor:
        """The readouts ``directions . x``: ``[..., m]``."""
        return x.to(self.directions.dtype) @ self.directions.T

    def sides(self, x: Tensor) -> Tensor:
        """Whether each readout is above its threshold: ``[..., m]`` booleans."""
        return self.values(x) > self.thresholds

    def predict(self, x: Tensor) -> Tensor:
        """The rule's label for each row of ``x``."""
        s = self.sides(x)
        return s.all(-1) if self.op == "and" else s.any(-1)

    def agreement(self, x: Tensor, target: Tensor) -> float:
        """Fraction of rows where the rule matches ``target``."""
        return (self.predict(x) == target.reshape(-1).bool()).double().mean().item()


def rule_agreement(sides: Tensor, target: Tensor, op: str = "and") -> float:
    """Agreement of the AND (or OR) of boolean columns ``sides`` ``[N, m]`` with ``target`` ``[N]``.

    Example:
        >>> import torch
        >>> s = torch.tensor([[True, True], [True, False], [False, False]])
        >>> rule_agreement(s, torch.tensor([1, 0, 0])), rule_agreement(s, torch.tensor([1, 0, 0]), "or")
        (1.0, 0.6666666666666666)
    """
    check(op in OPS, f"op must be and or or, got {op!r}.")
    pred = sides.all(-1) if op == "and" else sides.any(-1)
    return (pred == target.reshape(-1).bool()).double().mean().item()


def _best_thresholds(values: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Column-wise :func:`best_threshold`: ``values`` ``[M, C]``; returns thresholds and correct counts ``[C]``."""
    vs, order = torch.sort(values, 0)
    ys = y.double()[order]
    zero = torch.zeros(1, values.shape[1], dtype=torch.float64, device=values.device)
    neg_below = torch.cat([zero, torch.cumsum(1 - ys, 0)])
    pos_above = ys.sum(0, keepdim=True) - torch.cat([zero, torch.cumsum(ys, 0)])
    score = neg_below + pos_above
    valid = torch.ones_like(score, dtype=torch.bool)
    valid[1:-1] = vs[1:] > vs[:-1]
    score = torch.where(valid, score, torch.full_like(score, -1))
    best, i = score.max(0)
    lo = vs.gather(0, (i - 1).clamp(min=0)[None])[0]
    hi = vs.gather(0, i.clamp(max=len(vs) - 1)[None])[0]
    t = torch.where(i == 0, vs[0] - 1.0, torch.where(i == len(vs), vs[-1] + 1.0, (lo + hi) / 2))
    return t, best


def _angle_search(x: Tensor, y: Tensor, dirs: Tensor, thr: Tensor, n_angles: int = 720,
                  rounds: int = 2) -> tuple[Tensor, Tensor]:
    """For 2-d ``x``: exact search over directions (angles) and thresholds of a 2-direction AND rule."""
    angles = torch.arange(n_angles, dtype=torch.float64, device=x.device) * (2 * torch.pi / n_angles)
    cand = torch.stack([angles.cos(), angles.sin()], 1)  # [n_angles, 2]
    proj = x @ cand.T  # [N, n_angles]
    dirs, thr = dirs.clone(), thr.clone()
    for _ in range(rounds):
        for i in range(2):
            other = (x @ dirs[1 - i]) > thr[1 - i]
            if not bool(other.any()):
                continue
            t, correct = _best_thresholds(proj[other], y[other])
            j = int(correct.argmax())
            old = rule_agreement(torch.stack([x @ dirs[0] > thr[0], x @ dirs[1] > thr[1]], 1), y)
            new = float(correct[j] + (~y[~other]).sum()) / len(y)
            if new > old:
                dirs[i], thr[i] = cand[j], t[j]
    return dirs, thr


def _refine(values: Tensor, y: Tensor, thresholds: Tensor, rounds: int = 3) -> Tensor:
    """Exact coordinate-wise threshold search for an AND rule."""
    t = thresholds.clone()
    m = values.shape[1]
    for _ in range(rounds):
        for i in range(m):
            others = torch.ones(len(y), dtype=torch.bool, device=values.device)
            for j in range(m):
                if j != i:
                    others &= values[:, j] > t[j]
            if bool(others.any()):
                t[i] = best_threshold(values[others, i], y[others])[0]
    return t


def refine_thresholds(values: Tensor, target: Tensor, thresholds: Tensor, rounds: int = 3) -> Tensor:
    """Thresholds of an AND rule over fixed readouts ``values`` ``[N, m]``, improved by exact
    coordinate-wise search (each threshold the best given the others), starting from ``thresholds`` ``[m]``.

    Example:
        >>> import torch
        >>> v = torch.tensor([[0.2, 0.9], [0.8, 0.9], [0.8, 0.1], [0.9, 0.8]], dtype=torch.float64)
        >>> refine_thresholds(v, torch.tensor([0, 1, 0, 1]), torch.tensor([0.0, 0.0], dtype=torch.float64)).tolist()
        [0.5, 0.45]
    """
    check(values.dim() == 2 and len(values) == len(target.reshape(-1)) and values.shape[1] == len(thresholds),
          "values must be [N, m] with one target per row and m thresholds.")
    return _refine(values.double(), target.reshape(-1).bool(), thresholds.double(), rounds)


def fit_threshold_rule(
    x: Tensor,
    target: Tensor,
    n_directions: int = 2,
    op: str = "and",
    restarts: int = 4,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    max_rows: int = 4096,
) -> ThresholdRule:
    """Fit an AND (or OR) of ``n_directions`` half-spaces of ``x`` ``[N, d]`` to ``target`` ``[N]``.

    A soft rule ``prod_i sigmoid(w_i . z - b_i)`` on standardized ``x`` is trained with Adam
    from ``restarts`` seeded starts (on at most ``max_rows`` random rows); each is sharpened by an exact threshold search along its
    directions, and the best by agreement is returned (directions of unit norm in ``x``'s
    space, sorted by decreasing threshold margin so the order is reproducible). For 2-d ``x``
    and two directions, an exact search over angles (0.5 degree steps) and thresholds follows.
    An OR rule
    is fitted as the negation of an AND of the negated half-spaces.

    Example: see the module docstring.
    """
    check(op in OPS, f"op must be and or or, got {op!r}.")
    check(x.dim() == 2 and len(x) == len(target.reshape(-1)), "x must be [N, d] with one target per row.")
    check(n_directions >= 1, f"n_directions must be at least 1, got {n_directions}.")
    y = target.reshape(-1).bool()
    if op == "or":
        rule = fit_threshold_rule(x, ~y, n_directions, "and", restarts, steps, lr, seed, max_rows)
        return ThresholdRule(-rule.directions, -rule.thresholds, "or")
    xd = x.double()
    mu, sd = xd.mean(0), xd.std(0).clamp(min=1e-8)
    g = torch.Generator().manual_seed(seed)
    fit_rows = torch.randperm(len(x), generator=g)[:max_rows] if len(x) > max_rows else torch.arange(len(x))
    z = ((xd[fit_rows] - mu) / sd).float()  # the soft fit sees a random subset; thresholds are refined on all rows
    yf = y[fit_rows].float()
    best: tuple[float, Tensor, Tensor] | None = None
    for _ in range(restarts):
        w = (torch.randn(n_directions, x.shape[1], generator=g) / x.shape[1] ** 0.5).to(x.device).requires_grad_()
        b = torch.zeros(n_directions, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                logits = z @ w.T - b
                log_p = F.logsigmoid(logits).sum(-1)
                log_not_p = torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
                loss = -(yf * log_p + (1 - yf) * log_not_p).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            dirs = (w.double() / sd)  # back to x's space: w . (x - mu) / sd
            norms = dirs.norm(dim=1, keepdim=True).clamp(min=1e-12)
            dirs = dirs / norms
            thr = (b.double() / norms[:, 0]) + dirs @ mu
            vals = xd @ dirs.T
            thr = _refine(vals, y, thr)
            agree = rule_agreement(vals > thr, y)
        if best is None or agree > best[0]:
            best = (agree, dirs, thr)
    assert best is not None
    _, dirs, thr = best
    if x.shape[1] == 2 and n_directions == 2:  # in a plane the directions can be searched exactly
        dirs, thr = _angle_search(xd, y, dirs, thr)
    vals = xd @ dirs.T
    margin = ((vals - thr) / vals.std(0).clamp(min=1e-12)).abs().mean(0)  # a constant readout has no spread
    order = torch.argsort(margin, descending=True)
    return ThresholdRule(dirs[order], thr[order], "and")


def lift_rule(rule: ThresholdRule, components: Tensor, mean: Tensor) -> ThresholdRule:
    """A rule fitted on coordinates ``z = (x - mean) @ components.T`` rewritten as a rule on ``x``.

    ``components`` ``[k, d]`` with orthonormal rows (e.g. the first ``k`` PCA components):
    fit in a low-dimensional plane, then read the directions in the full space.

    Example:
        >>> import torch
        >>> comps, mean = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0.0, 2.0, 0.0])
        >>> r = lift_rule(ThresholdRule(torch.tensor([[1.0]]), torch.tensor([0.5])), comps, mean)
        >>> r.directions.tolist(), r.thresholds.tolist(), r.predict(torch.tensor([[9.0, 2.6, 9.0]])).tolist()
        ([[0.0, 1.0, 0.0]], [2.5], [True])
    """
    c = components.to(rule.directions.dtype)
    dirs = rule.directions @ c
    return ThresholdRule(dirs, rule.thresholds + dirs @ mean.to(dirs.dtype), rule.op)


def fit_rule_in_subspace(x: Tensor, target: Tensor, basis: Tensor, seed: int = 0, **fit_kwargs: Any) -> ThresholdRule:
    """Fit a threshold rule on the coordinates of ``x`` in a subspace and lift it back to ``x``.

    ``x`` ``[N, d]``, ``target`` ``[N]`` (bool), ``basis`` ``[d, k]`` with orthonormal columns
    (e.g. from :func:`gradient_subspace`): the rule is fitted by :func:`fit_threshold_rule`
    (``fit_kwargs`` passed on) on ``(x - mean) @ basis`` and rewritten by :func:`lift_rule`
    as a rule on ``x`` whose directions lie in the subspace. Errors as :func:`fit_threshold_rule`.

    Example:
        >>> import torch
        >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)).double()
        >>> basis = torch.eye(3, dtype=torch.float64)[:, :2]
        >>> r = fit_rule_in_subspace(x, (x[:, 0] > 0) & (x[:, 1] > 0), basis, steps=50)
        >>> r.directions.shape, float(r.directions[:, 2].abs().max())
        (torch.Size([2, 3]), 0.0)
    """
    mean = x.mean(0)
    return lift_rule(fit_threshold_rule((x - mean) @ basis, target, seed=seed, **fit_kwargs), basis.T, mean)


def logit_diff(out: Tensor) -> Tensor:
    """Logit of class 1 minus class 0 at the last position (or of a ``[N, 2]`` output).

    Example:
        >>> import torch
        >>> logit_diff(torch.tensor([[[0.0, 0.0], [1.0, 3.0]]])).tolist()
        [2.0]
    """
    last = out[:, -1] if out.dim() == 3 else out
    return last[:, 1] - last[:, 0]


def gradient_subspace(
    model: Any,
    inputs: Tensor,
    site: str,
    k: int = 2,
    metric: Callable[[Tensor], Tensor] = logit_diff,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    batch_size: int = 4096,
    **forward_kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """The ``k`` directions of a site the model's output is most sensitive to, and their share.

    Top eigenvectors of ``E[g g^T]`` with ``g`` the gradient of ``metric(output)`` (default:
    the logit difference) with respect to the site's last-position activation: the subspace
    later layers actually read. Returns ``(basis [d, k], share [k])``, share = eigenvalue
    over the trace.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=3, d_hidden=(), d_out=2), seed=0)
        >>> with torch.no_grad():
        ...     _ = m.W_U.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
        >>> basis, share = gradient_subspace(m, torch.randn(10, 3), "hook_input", k=1)
        >>> [round(abs(v), 3) for v in basis[:, 0].tolist()], round(float(share[0]), 3)
        ([0.0, 0.0, 1.0], 1.0)
    """
    check(site in model.hook_dict, f"Unknown activation site {site!r} for {type(model).__name__}.")
    gram: Tensor | None = None
    with torch.enable_grad():
        for chunk in inputs.split(batch_size):
            out, acts = cache(model, chunk, names=site, fwd_hooks=fwd_hooks, requires_grad=True, **forward_kwargs)
            (g,) = torch.autograd.grad(metric(out).sum(), acts[site])
            g = g.reshape(len(chunk), -1, g.shape[-1])[:, -1].double()
            gram = g.T @ g if gram is None else gram + g.T @ g
    assert gram is not None
    ev, evec = torch.linalg.eigh(gram / len(inputs))
    ev, evec = ev.flip(0), evec.flip(1)
    check(1 <= k <= len(ev), f"k must be between 1 and {len(ev)}, got {k}.")
    return evec[:, :k], ev[:k] / ev.sum().clamp(min=1e-30)


def subspace_r2(x: Tensor, directions: Tensor, basis: Tensor) -> Tensor:
    """How much of each readout ``x @ directions[i]`` a subspace explains: R^2 of a linear fit.

    ``directions`` ``[m, d]``, ``basis`` ``[d, k]``; returns ``[m]`` values in [0, 1]. Unlike a
    cosine, this weighs each part of a direction by the variance of ``x`` along it.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> r2 = subspace_r2(x, torch.eye(3, dtype=torch.float64)[:2], torch.eye(3, dtype=torch.float64)[:, :1])
        >>> round(r2[0].item(), 3), r2[1].item() < 0.1  # x[:, 1] is independent of x[:, 0]
        (1.0, True)
    """
    xd = x.reshape(-1, x.shape[-1]).double()
    xc = xd - xd.mean(0)
    v = xc @ directions.double().T  # [N, m]
    z = xc @ basis.double()  # [N, k]
    coef = torch.linalg.lstsq(z, v).solution
    resid = v - z @ coef
    return (1 - resid.pow(2).sum(0) / v.pow(2).sum(0).clamp(min=1e-30)).clamp(0, 1)


def readout_basis(readouts: Tensor, x: Tensor | None = None) -> Tensor:
    """A ``[d, d]`` basis whose coordinates are ``x @ readouts`` then an orthonormal complement.

    ``readouts`` ``[d, k]``: linearly independent columns. The complement of their span is
    given an orthonormal basis ordered by the variance of ``x`` in it (PCA) when ``x`` is given.
    Use it as a scrubbing basis: coordinate ``i < k`` is exactly the readout ``readouts[:, i] . x``.

    Example:
        >>> import torch
        >>> from interplab.interventions.ablate import coordinates
        >>> r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
        >>> x = torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64)
        >>> coordinates(x, basis=readout_basis(r))[0, :2].tolist()
        [2.0, 5.0]
    """
    d, k = readouts.shape
    r = readouts.double()
    q, _ = torch.linalg.qr(r, mode="complete")
    comp = q[:, k:]  # orthonormal basis of the orthogonal complement of span(readouts)
    if x is not None and d > k:
        xc = x.reshape(-1, d).double() @ comp
        xc = xc - xc.mean(0)
        _, _, vt = torch.linalg.svd(xc, full_matrices=False)
        comp = comp @ vt.T
    w = torch.cat([r, comp], 1)
    check(bool(torch.linalg.matrix_rank(w) == d), "readout directions must be linearly independent.")
    return torch.linalg.inv(w.T)


__all__ = ["OPS", "best_threshold", "refine_thresholds", "ThresholdRule", "rule_agreement", "fit_threshold_rule", "lift_rule", "fit_rule_in_subspace", "logit_diff",
           "gradient_subspace", "subspace_r2", "readout_basis"]
