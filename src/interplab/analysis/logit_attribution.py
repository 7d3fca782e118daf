"""The logit-difference direction of a linear readout, pulled back, and direct logit attribution.

For a readout ``logits = x @ W + b`` (``W`` ``[d, n_classes]``, TransformerLens layout; pass
``linear.weight.T`` for a ``torch.nn.Linear``), the logit difference between classes ``pos``
and ``neg`` is ``x @ (W[:, pos] - W[:, neg]) + (b[pos] - b[neg])``: a direction in the
readout's input space. :func:`pull_back` moves a direction through an earlier linear map
(``y = x @ M``: the direction ``v`` on ``y`` is ``M @ v`` on ``x``). Direct logit attribution
splits the logit difference into one term per unit: activation times the unit's weight on
the direction (:func:`direct_logit_attribution`); the terms plus the bias sum to it exactly.

Used for the CNN's 200 fc1 units here, and equally for attention heads or MLP neurons (pass
each component's output written into the residual stream as ``acts``).

Example:
    >>> import torch
    >>> W = torch.tensor([[1.0, 3.0], [2.0, 0.0]]); b = torch.tensor([0.5, 0.0])
    >>> v = logit_diff_direction(W, pos=1, neg=0); v.tolist()
    [2.0, -2.0]
    >>> x = torch.tensor([[1.0, 1.0]])
    >>> dla = direct_logit_attribution(x, v); dla.tolist()
    [[2.0, -2.0]]
    >>> logits = x @ W + b
    >>> float(dla.sum() + logit_diff_bias(b, 1, 0)) == float(logits[0, 1] - logits[0, 0])
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.errors import check


def logit_diff_direction(W: Tensor, pos: int = 1, neg: int = 0) -> Tensor:
    """``W[:, pos] - W[:, neg]`` for a readout ``W`` ``[d, n_classes]``.

    Example: see the module docstring.
    """
    check(W.dim() == 2, f"The readout must be a [d, n_classes] matrix, got shape {tuple(W.shape)}.")
    n = W.shape[1]
    check(0 <= pos < n and 0 <= neg < n and pos != neg, f"pos and neg must be two different classes in 0..{n - 1}.")
    return W[:, pos] - W[:, neg]


def logit_diff_bias(b: Tensor | None, pos: int = 1, neg: int = 0) -> float:
    """The constant part of the logit difference, ``b[pos] - b[neg]`` (0 without a bias).

    Example:
        >>> logit_diff_bias(torch.tensor([1.0, 3.0]))
        2.0
    """
    return 0.0 if b is None else float(b[pos] - b[neg])


def logit_diff(logits: Tensor, pos: int = 1, neg: int = 0) -> Tensor:
    """``logits[..., pos] - logits[..., neg]``.

    Example:
        >>> logit_diff(torch.tensor([[0.0, 2.0]])).tolist()
        [2.0]
    """
    return logits[..., pos] - logits[..., neg]


def pull_back(direction: Tensor, M: Tensor) -> Tensor:
    """The direction ``direction`` (on ``y = x @ M``) as a direction on ``x``: ``M @ direction``.

    For a ``torch.nn.Linear`` (``y = x @ weight.T``) pass ``M = weight.T``.

    Example:
        >>> M = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # 3 -> 2
        >>> pull_back(torch.tensor([1.0, -1.0]), M).tolist()
        [1.0, -2.0, 0.0]
    """
    check(M.dim() == 2 and M.shape[1] == direction.shape[-1],
          f"The map must be [d_in, {direction.shape[-1]}], got shape {tuple(M.shape)}.")
    return M @ direction


def direct_logit_attribution(acts: Tensor, direction: Tensor) -> Tensor:
    """Per-unit contributions ``acts[..., i] * direction[i]`` to the logit difference.

    Example: see the module docstring.
    """
    check(acts.shape[-1] == direction.shape[-1],
          f"acts have {acts.shape[-1]} units but the direction has {direction.shape[-1]} entries.")
    return acts * direction.to(acts.dtype)


__all__ = ["logit_diff_direction", "logit_diff_bias", "logit_diff", "pull_back", "direct_logit_attribution"]
