"""Attention-head detectors: previous-token and induction scores from attention patterns.

On repeated random sequences ``[BOS, r_1..r_L, r_1..r_L]`` an *induction head* attends from
each token of the second copy to the token right after that token's first occurrence
(``i -> i - L + 1``); a *previous-token head* attends from each position to the one before
(``i -> i - 1``). A head's score is its mean attention along that offset.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=8, n_ctx=9, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
    >>> x = repeated_tokens(n_values=7, length=4, n=3, bos=7, seed=0)
    >>> x.shape, induction_scores(m, x, length=4).shape
    (torch.Size([3, 9]), torch.Size([2, 2]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.errors import check
from interplab.instrument import cache


def repeated_tokens(n_values: int, length: int, n: int, bos: int, seed: int = 0) -> Tensor:
    """``n`` sequences ``[bos, r, r]`` with ``r`` uniform random of ``length`` tokens below ``n_values``.

    Example:
        >>> x = repeated_tokens(n_values=5, length=3, n=2, bos=5)
        >>> bool((x[:, 1:4] == x[:, 4:]).all()), x[0, 0].item()
        (True, 5)
    """
    r = torch.randint(n_values, (n, length), generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.full((n, 1), bos), r, r], dim=1)


def _patterns(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, acts = cache(model, tokens, names=names)
    return torch.stack([acts[n] for n in names], 1)  # [batch, layer, head, q, k]


def _offset_score(pattern: Tensor, queries: Tensor, offset: int) -> Tensor:
    return pattern[..., queries, queries - offset].mean((0, -1))


def previous_token_scores(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Mean attention from each position ``i >= 1`` to ``i - 1``: ``[layer, head]``.

    Example: see the module docstring.
    """
    check(tokens.dim() == 2 and tokens.shape[1] >= 2, "previous_token_scores needs tokens [batch, pos >= 2].")
    n = tokens.shape[1]
    return _offset_score(_patterns(model, tokens), torch.arange(1, n), 1)


def induction_scores(model: torch.nn.Module, tokens: Tensor, length: int) -> Tensor:
    """Mean attention from second-copy positions ``i`` to ``i - length + 1``: ``[layer, head]``.

    ``tokens`` are ``[BOS, r, r]`` sequences (see :func:`repeated_tokens`) with ``r`` of ``length``.

    Example: see the module docstring.
    """
    check(tokens.dim() == 2 and tokens.shape[1] == 2 * length + 1,
          f"induction_scores needs [BOS, r, r] sequences of length {2 * length + 1}, got {tuple(tokens.shape)}.")
    return _offset_score(_patterns(model, tokens), torch.arange(length + 1, 2 * length + 1), length - 1)


def heads_above(scores: Tensor, threshold: float) -> list[str]:
    """Heads whose score exceeds ``threshold``, as ``"layer.head"`` strings.

    Example:
        >>> heads_above(torch.tensor([[0.1, 0.9], [0.6, 0.0]]), 0.5)
        ['0.1', '1.0']
    """
    return [f"{layer}.{head}" for layer, head in torch.nonzero(scores > threshold).tolist()]


__all__ = ["repeated_tokens", "previous_token_scores", "induction_scores", "heads_above"]
