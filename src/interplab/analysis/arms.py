"""Arms of a point cloud: the directions in which activations leave a common resting point.

ReLU layers often put their inputs on a few *arms* (a V in the first two principal
components): most inputs sit near a resting point, and the others move away from it along a
few directions, one per feature the layer detects. :func:`fit_arms` finds the resting point
(the mean of the points with the least activation), clusters the points that are far from it
by the angle of their offset (spherical k-means), fits one unit direction per arm (the top
singular vector of the arm's offsets) and gives every point its arm and its position along it.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> t = torch.rand(400, generator=g)
    >>> arm = torch.arange(400) % 2
    >>> pts = torch.where(arm[:, None] == 0, t[:, None] * torch.tensor([1.0, 0.2]),
    ...                   t[:, None] * torch.tensor([-0.3, 1.0]))
    >>> arms = fit_arms(pts, n_arms=2)
    >>> agree = (arms.assignment == arm).float().mean().item()
    >>> max(agree, 1 - agree) > 0.95
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from interplab.errors import check


@dataclass
class Arms:
    """``origin`` ``[d]``, unit ``directions`` ``[n_arms, d]``, per point ``assignment`` and ``position``."""

    origin: Tensor
    directions: Tensor
    assignment: Tensor
    position: Tensor

    def project(self, x: Tensor) -> Tensor:
        """Positions of ``x`` ``[N, d]`` along every arm, ``[N, n_arms]``."""
        return (x.double() - self.origin) @ self.directions.T


def fit_arms(points: Tensor, n_arms: int = 2, rest_quantile: float = 0.05, far_quantile: float = 0.5,
             seed: int = 0) -> Arms:
    """Fit ``n_arms`` arms to ``points`` ``[N, d]``; see the module docstring.

    ``rest_quantile``: the fraction of points with the smallest norm that define the resting
    point; ``far_quantile``: offsets shorter than this quantile are left out of the clustering.

    Example: see the module docstring.
    """
    from sklearn.cluster import KMeans

    x = points.double().reshape(len(points), -1)
    check(len(x) >= 4 * n_arms, f"Need at least {4 * n_arms} points to fit {n_arms} arms.")
    norms = x.norm(dim=1)
    k = max(1, int(rest_quantile * len(x)))
    origin = x[norms.argsort()[:k]].mean(0)
    off = x - origin
    length = off.norm(dim=1)
    far = length >= length.quantile(far_quantile)
    unit = (off[far] / length[far, None].clamp(min=1e-12)).cpu().numpy()
    check(len(np.unique(unit.round(9), axis=0)) >= n_arms,
          f"The points leave their resting point in fewer than {n_arms} distinct directions, so {n_arms} arms "
          "cannot be fitted.")
    km = KMeans(n_clusters=n_arms, n_init=10, random_state=seed).fit(unit)
    directions = []
    for a in range(n_arms):
        members = off[far][torch.as_tensor(km.labels_ == a)]
        _, _, vt = torch.linalg.svd(members, full_matrices=False)
        v = vt[0]
        if float((members @ v).mean()) < 0:
            v = -v
        directions.append(v)
    dirs = torch.stack(directions)
    # order arms by decreasing number of far points, for a stable numbering
    counts = np.bincount(km.labels_, minlength=n_arms)
    dirs = dirs[torch.as_tensor(np.argsort(-counts, kind="stable"))]
    pos = off @ dirs.T
    return Arms(origin=origin, directions=dirs, assignment=pos.argmax(1), position=pos.max(1).values)


__all__ = ["Arms", "fit_arms"]
