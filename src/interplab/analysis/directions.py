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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from interplab.errors import check

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
    neg_below = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(1 - ys, 0)])
    pos_above = ys.sum() - torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ys, 0)])
    score = neg_below + pos_above
    # only cut between distinct values
    valid = torch.ones(len(v) + 1, dtype=torch.bool)
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


def _refine(values: Tensor, y: Tensor, thresholds: Tensor, rounds: int = 3) -> Tensor:
    """Exact coordinate-wise threshold search for an AND rule."""
    t = thresholds.clone()
    m = values.shape[1]
    for _ in range(rounds):
        for i in range(m):
            others = torch.ones(len(y), dtype=torch.bool)
            for j in range(m):
                if j != i:
                    others &= values[:, j] > t[j]
            if bool(others.any()):
                t[i] = best_threshold(values[others, i], y[others])[0]
    return t


def fit_threshold_rule(
    x: Tensor,
    target: Tensor,
    n_directions: int = 2,
    op: str = "and",
    restarts: int = 4,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
) -> ThresholdRule:
    """Fit an AND (or OR) of ``n_directions`` half-spaces of ``x`` ``[N, d]`` to ``target`` ``[N]``.

    A soft rule ``prod_i sigmoid(w_i . z - b_i)`` on standardized ``x`` is trained with Adam
    from ``restarts`` seeded starts; each is sharpened by an exact threshold search along its
    directions, and the best by agreement is returned (directions of unit norm in ``x``'s
    space, sorted by decreasing threshold margin so the order is reproducible). An OR rule
    is fitted as the negation of an AND of the negated half-spaces.

    Example: see the module docstring.
    """
    check(op in OPS, f"op must be and or or, got {op!r}.")
    check(x.dim() == 2 and len(x) == len(target.reshape(-1)), "x must be [N, d] with one target per row.")
    check(n_directions >= 1, f"n_directions must be at least 1, got {n_directions}.")
    y = target.reshape(-1).bool()
    if op == "or":
        rule = fit_threshold_rule(x, ~y, n_directions, "and", restarts, steps, lr, seed)
        return ThresholdRule(-rule.directions, -rule.thresholds, "or")
    xd = x.double()
    mu, sd = xd.mean(0), xd.std(0).clamp(min=1e-8)
    z = ((xd - mu) / sd).float()
    yf = y.float()
    g = torch.Generator().manual_seed(seed)
    best: tuple[float, Tensor, Tensor] | None = None
    for _ in range(restarts):
        w = (torch.randn(n_directions, x.shape[1], generator=g) / x.shape[1] ** 0.5).requires_grad_()
        b = torch.zeros(n_directions, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
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
    vals = xd @ dirs.T
    margin = ((vals - thr) / vals.std(0)).abs().mean(0)
    order = torch.argsort(margin, descending=True)
    return ThresholdRule(dirs[order], thr[order], "and")


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


__all__ = ["OPS", "best_threshold", "ThresholdRule", "rule_agreement", "fit_threshold_rule", "readout_basis"]
