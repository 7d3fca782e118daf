"""Principal component analysis of activations, with the variance each component explains.

Example:
    >>> import torch
    >>> x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([5.0, 1, 1, 1, 0.1])
    >>> p = pca(x)
    >>> p.components.shape, round(p.explained(1), 1)
    (torch.Size([5, 5]), 0.9)
    >>> p.transform(x).shape
    torch.Size([200, 5])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interplab.errors import check


@dataclass
class PCA:
    """``components`` ``[k, d]`` (rows, by decreasing variance), ``variance`` ``[k]``, ``total`` variance."""

    mean: Tensor
    components: Tensor
    variance: Tensor
    total: float

    @property
    def ratio(self) -> Tensor:
        """Fraction of the total variance explained by each component."""
        return self.variance / self.total

    def explained(self, k: int) -> float:
        """Fraction of the variance explained by the first ``k`` components."""
        return float(self.ratio[:k].sum())

    def transform(self, x: Tensor, k: int | None = None) -> Tensor:
        """Coordinates of ``x`` (``[..., d]``) along the first ``k`` components (all if None)."""
        comps = self.components if k is None else self.components[:k]
        return (x.to(self.mean.dtype) - self.mean) @ comps.T

    @property
    def basis(self) -> Tensor:
        """The components as columns ``[d, k]`` (an orthonormal basis, e.g. for scrubbing)."""
        return self.components.T


def pca(x: Tensor, k: int | None = None, center: bool = True) -> PCA:
    """PCA of ``x`` ``[..., d]`` (leading axes flattened), keeping ``k`` components (all if None).

    Components' signs are fixed so that each has a positive largest-magnitude entry.

    Example: see the module docstring.
    """
    x = x.reshape(-1, x.shape[-1]).double()
    check(len(x) >= 2, "PCA needs at least two samples.")
    mean = x.mean(0) if center else x.new_zeros(x.shape[-1])
    xc = x - mean
    _, s, vt = torch.linalg.svd(xc, full_matrices=False)
    var = s**2 / (len(x) - 1)
    total = float(xc.pow(2).sum() / (len(x) - 1))
    check(total > 0, "x has no variance (every sample is the same), so its principal components are undefined.")
    idx = vt.abs().argmax(1)
    signs = torch.sign(vt[torch.arange(len(vt), device=vt.device), idx])
    vt = vt * signs[:, None]
    if k is not None:
        check(1 <= k <= len(var), f"k must be between 1 and {len(var)}, got {k}.")
        vt, var = vt[:k], var[:k]
    return PCA(mean=mean, components=vt, variance=var, total=total)


__all__ = ["PCA", "pca"]
