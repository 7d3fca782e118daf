"""Fourier analysis of modular arithmetic models: embeddings, neurons, logits, progress measures.

For inputs in ``Z_p`` (p odd) the Fourier basis has a constant and, for each frequency
``k = 1..(p-1)/2`` with ``w_k = 2 pi k / p``, the vectors ``cos(w_k x)`` and ``sin(w_k x)``,
all normalised. A model that has grokked modular addition puts its embedding on a few *key
frequencies*, has neurons that each read one of them, and writes logits built from
``cos(w_k (a + b - c))``. The progress measures of Nanda et al. (2023) follow:

- restricted loss: the loss when the logits keep only their ``cos/sin(w_k (a + b - c))``
  components for the key frequencies (all pairs);
- excluded loss: the loss on the training pairs when exactly those components are removed.

Example:
    >>> import torch
    >>> F, names = fourier_basis(5)
    >>> names
    ['const', 'cos 1', 'sin 1', 'cos 2', 'sin 2']
    >>> bool(torch.allclose(F @ F.T, torch.eye(5), atol=1e-6))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F_
from torch import Tensor

from interplab.errors import check


def fourier_basis(p: int) -> tuple[Tensor, list[str]]:
    """The orthonormal Fourier basis of ``Z_p`` as rows of a ``[p, p]`` matrix, and its names.

    Row 0 is the constant; rows ``2k-1`` and ``2k`` are ``cos`` and ``sin`` of frequency ``k``.

    Example: see the module docstring.
    """
    check(isinstance(p, int) and p >= 3 and p % 2 == 1, f"The Fourier basis needs an odd p >= 3, got {p}.")
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float(), names


def frequency_norms(W: Tensor) -> Tensor:
    """Norm per frequency of a table ``W[p, d]`` indexed by residues (e.g. the embedding ``W_E[:p]``).

    Returns ``[(p-1)/2]``: entry ``k-1`` is the norm of the ``cos k`` and ``sin k`` components.

    Example:
        >>> p = 7; x = torch.arange(p).float()
        >>> W = torch.stack([torch.cos(2 * math.pi * 3 * x / p), torch.sin(2 * math.pi * 3 * x / p)], 1)
        >>> frequency_norms(W).argmax().item() + 1
        3
    """
    p = W.shape[0]
    basis, _ = fourier_basis(p)
    coef = basis.to(W.device) @ W.float()  # [p, d]
    sq = coef.pow(2).sum(-1)[1:].reshape(-1, 2).sum(-1)
    return sq.sqrt()


def key_frequencies(norms: Tensor, ratio: float = 4.0) -> list[int]:
    """Frequencies whose norm stands out: above ``ratio`` times the median norm (sorted, 1-based).

    Example:
        >>> key_frequencies(torch.tensor([0.1, 2.0, 0.12, 0.09, 1.5, 0.11]))
        [2, 5]
    """
    check(norms.dim() == 1 and norms.numel() >= 3, "key_frequencies needs a vector of at least 3 norms.")
    thresh = ratio * norms.median()
    return [int(k) + 1 for k in torch.nonzero(norms > thresh).flatten().tolist()]


def fourier_2d(values: Tensor) -> Tensor:
    """2D Fourier coefficients of a table over ``(a, b)``: ``values[p, p, ...]`` -> same shape.

    Example:
        >>> p = 5; a = torch.arange(p).float()[:, None]
        >>> table = torch.cos(2 * math.pi * 2 * a / p).expand(p, p)   # depends on a only
        >>> c = fourier_2d(table)
        >>> torch.nonzero(c.abs() > 1e-4).tolist()   # (cos 2 in a) x (const in b)
        [[3, 0]]
    """
    p = values.shape[0]
    check(values.dim() >= 2 and values.shape[1] == p, f"fourier_2d needs a [p, p, ...] table, got {tuple(values.shape)}.")
    basis, _ = fourier_basis(p)
    return torch.einsum("ia,jb,ab...->ij...", basis, basis, values.float())


def neuron_frequencies(acts: Tensor) -> tuple[Tensor, Tensor]:
    """Each neuron's dominant frequency and the share of its variance that frequency explains.

    ``acts[p, p, n]``: activations over all pairs ``(a, b)``. The share of frequency ``k``
    counts the 2D Fourier terms built from the constant, ``cos k`` and ``sin k`` on both axes
    (the constant term itself excluded). Returns ``(freq[n] (1-based), share[n])``.

    Example:
        >>> p = 7; a = torch.arange(p).float()
        >>> n0 = torch.cos(2 * math.pi * 2 * (a[:, None] + a[None, :]) / p)   # frequency 2
        >>> freq, share = neuron_frequencies(n0[..., None])
        >>> freq.tolist(), round(share.item(), 4)
        ([2], 1.0)
    """
    p = acts.shape[0]
    coef = fourier_2d(acts).pow(2)  # [p, p, n]
    coef[0, 0] = 0.0
    total = coef.sum((0, 1)).clamp_min(1e-12)
    shares = []
    for k in range(1, (p - 1) // 2 + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k])
        shares.append(coef[idx][:, idx].sum((0, 1)) / total)
    shares_t = torch.stack(shares)  # [K, n]
    share, freq = shares_t.max(0)
    return freq + 1, share


def key_frequency_share(values: Tensor, freqs: Sequence[int]) -> Tensor:
    """Share of a table's variance over ``(a, b)`` carried by the frequencies ``freqs``.

    ``values[p, p, n]``: e.g. a head's output or a neuron's activation over all pairs. Counts
    the 2D Fourier terms built from the constant, ``cos k`` and ``sin k`` of each ``k`` in
    ``freqs`` on both axes (as :func:`neuron_frequencies`), the constant term excluded, summed
    over the last axis: returns a scalar in ``[0, 1]``.

    Example:
        >>> p = 7; a = torch.arange(p).float()
        >>> table = torch.cos(2 * math.pi * 3 * (a[:, None] + a[None, :]) / p)[..., None]
        >>> round(key_frequency_share(table, [3]).item(), 4), round(key_frequency_share(table, [1]).item(), 4)
        (1.0, 0.0)
    """
    coef = fourier_2d(values).pow(2)
    coef[0, 0] = 0.0
    idx = torch.tensor(sorted({0} | {2 * k - 1 for k in freqs} | {2 * k for k in freqs}))
    return coef[idx][:, idx].sum() / coef.sum().clamp_min(1e-12)


def _key_directions(p: int, freqs: Sequence[int]) -> Tensor:
    """Unit vectors ``cos/sin(w_k (a + b - c))`` over the ``[p, p, p]`` grid, one per row."""
    r = torch.arange(p, dtype=torch.float64)
    s = (r[:, None, None] + r[None, :, None] - r[None, None, :])
    dirs = []
    for k in freqs:
        w = 2 * math.pi * k / p
        dirs += [torch.cos(w * s), torch.sin(w * s)]
    d = torch.stack(dirs).flatten(1)
    return (d / d.norm(dim=1, keepdim=True)).float()


def restricted_and_excluded_logits(logits: Tensor, freqs: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Split logits ``[p, p, p]`` (a, b, c) into their key-frequency ``a + b - c`` part and the rest.

    Returns ``(restricted, excluded)``, both ``[p, p, p]``, summing to ``logits``.

    Example:
        >>> p = 5; r = torch.arange(p).float()
        >>> s = r[:, None, None] + r[None, :, None] - r[None, None, :]
        >>> logits = torch.cos(2 * math.pi * 1 * s / p) + 0.1 * torch.cos(2 * math.pi * 2 * r)[None, None, :]
        >>> kept, rest = restricted_and_excluded_logits(logits, [1])
        >>> bool(torch.allclose(kept, torch.cos(2 * math.pi * s / p), atol=1e-5)), bool(torch.allclose(kept + rest, logits))
        (True, True)
    """
    p = logits.shape[0]
    check(logits.shape == (p, p, p), f"logits must have shape [p, p, p], got {tuple(logits.shape)}.")
    check(len(freqs) > 0, "At least one key frequency is needed.")
    d = _key_directions(p, freqs).to(logits.device)  # orthonormal rows
    flat = logits.float().flatten()
    restricted = (d.T @ (d @ flat)).reshape(p, p, p)
    return restricted, logits.float() - restricted


def _loss(logits: Tensor, labels: Tensor) -> float:
    return F_.cross_entropy(logits.double(), labels).item()


def progress_measures(logits: Tensor, freqs: Sequence[int], train_idx: Tensor) -> dict[str, float]:
    """Restricted loss (all pairs) and excluded loss (training pairs) of logits ``[p, p, p]``.

    ``train_idx`` indexes pairs as ``a * p + b``. Also returns the plain loss on all pairs.

    Example:
        >>> p = 5; r = torch.arange(p).float()
        >>> s = r[:, None, None] + r[None, :, None] - r[None, None, :]
        >>> logits = 10 * torch.cos(2 * math.pi * 2 * s / p)   # a model that uses frequency 2 only
        >>> m = progress_measures(logits, [2], torch.arange(10))
        >>> m["restricted_loss"] < 0.01 < m["excluded_loss"]
        True
    """
    p = logits.shape[0]
    restricted, excluded = restricted_and_excluded_logits(logits, freqs)
    r = torch.arange(p, device=logits.device)
    labels = ((r[:, None] + r[None, :]) % p).flatten()
    return {
        "restricted_loss": _loss(restricted.reshape(p * p, p), labels),
        "excluded_loss": _loss(excluded.reshape(p * p, p)[train_idx], labels[train_idx]),
        "loss": _loss(logits.reshape(p * p, p), labels),
    }


__all__ = ["fourier_basis", "frequency_norms", "key_frequencies", "fourier_2d", "neuron_frequencies", "key_frequency_share",
           "restricted_and_excluded_logits", "progress_measures"]
