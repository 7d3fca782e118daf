"""Attention-head detectors: previous-token, duplicate-token and induction scores.

On repeated random sequences ``[BOS, r_1..r_L, r_1..r_L]`` an *induction head* attends from
each token of the second copy to the token right after that token's first occurrence
(``i -> i - L + 1``); a *previous-token head* attends from each position to the one before
(``i -> i - 1``). A head's score is its mean attention along that offset.

On any text (Olsson et al. 2022, "In-context Learning and Induction Heads"; Wang et al. 2022
for duplicate-token heads): :func:`duplicate_token_scores` is the attention from a token to
earlier copies of itself, :func:`text_induction_scores` the attention from a token to the
tokens that followed its earlier copies, each summed over those keys and averaged over the
queries that have at least one (:func:`mask_scores`). :func:`attention_patterns` returns every
layer's pattern for the attention viewer of :class:`interplab.report.Report`.

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


def corrupted_first_copy(n_values: int, length: int, n: int, bos: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Clean prompts ``[bos, r, r]`` (:func:`repeated_tokens`, ``seed``) and corrupted ones whose first copy
    is other random tokens (``seed + 1``), both ``[n, 1 + 2 * length]``: patching them isolates induction.

    Example:
        >>> clean, corrupted = corrupted_first_copy(n_values=5, length=3, n=2, bos=5)
        >>> bool((clean[:, 4:] == corrupted[:, 4:]).all()), clean.shape
        (True, torch.Size([2, 7]))
    """
    clean = repeated_tokens(n_values, length, n, bos=bos, seed=seed)
    other = repeated_tokens(n_values, length, n, bos=bos, seed=seed + 1)
    return clean, torch.cat([clean[:, :1], other[:, 1:length + 1], clean[:, length + 1:]], dim=1)


def attention_patterns(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Every layer's attention pattern ``[batch, layer, head, query_pos, key_pos]``.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=12, d_model=8, n_layers=2, n_heads=2, d_mlp=None))
        >>> attention_patterns(m, torch.zeros(1, 10, dtype=torch.long)).shape
        torch.Size([1, 2, 2, 10, 10])
    """
    return _patterns(model, tokens)


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


def mask_scores(patterns: Tensor, mask: Tensor) -> Tensor:
    """Attention on the keys ``mask`` marks, summed over keys and averaged over the queries (and
    rows) with at least one marked key: ``patterns`` ``[batch, layer, head, q, k]``, ``mask``
    ``[batch, q, k]`` -> ``[layer, head]`` (zeros if no query has a marked key).

    Example:
        >>> p = torch.tensor([[0.5, 0.5], [0.2, 0.8]]).expand(1, 1, 1, 2, 2)
        >>> mask_scores(p, torch.tensor([[[False, False], [True, False]]]))
        tensor([[0.2000]])
    """
    mask = mask.to(patterns.device, patterns.dtype)
    has = mask.sum(-1) > 0  # [batch, q]
    if not bool(has.any()):
        return torch.zeros(patterns.shape[1:3], device=patterns.device)
    per_query = (patterns * mask[:, None, None]).sum(-1)  # [batch, layer, head, q]
    return (per_query * has[:, None, None]).sum((0, -1)) / has.sum()


def duplicate_token_mask(tokens: Tensor) -> Tensor:
    """``[batch, q, k]``: key ``k < q`` holds the same token as query ``q``.

    Example:
        >>> duplicate_token_mask(torch.tensor([[5, 6, 5]]))[0].int().tolist()
        [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
    """
    n = tokens.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)
    return (tokens[:, :, None] == tokens[:, None, :]) & earlier


def induction_mask(tokens: Tensor) -> Tensor:
    """``[batch, q, k]``: key ``k < q`` follows an earlier copy of query ``q``'s token (``tokens[k-1] == tokens[q]``).

    Example:
        >>> induction_mask(torch.tensor([[7, 8, 7]]))[0].int().tolist()
        [[0, 0, 0], [0, 0, 0], [0, 1, 0]]
    """
    n = tokens.shape[1]
    prev = torch.zeros_like(tokens[:, :, None] == tokens[:, None, :])
    prev[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)
    return prev & earlier


def duplicate_token_scores(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Mean attention from a token to its earlier copies, on any text ``[batch, pos]``: ``[layer, head]``.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=8, n_ctx=9, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
        >>> duplicate_token_scores(m, repeated_tokens(7, 4, 3, bos=7)).shape
        torch.Size([2, 2])
    """
    return mask_scores(_patterns(model, tokens), duplicate_token_mask(tokens))


def text_induction_scores(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Mean attention from a token to the tokens after its earlier copies, on any text: ``[layer, head]``.

    On ``[BOS, r, r]`` sequences with distinct tokens in ``r`` this equals :func:`induction_scores`.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=8, n_ctx=9, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
        >>> x = torch.tensor([[7, 0, 1, 2, 3, 0, 1, 2, 3]])
        >>> torch.allclose(text_induction_scores(m, x), induction_scores(m, x, length=4))
        True
    """
    return mask_scores(_patterns(model, tokens), induction_mask(tokens))


def heads_above(scores: Tensor, threshold: float) -> list[str]:
    """Heads whose score exceeds ``threshold``, as ``"layer.head"`` strings.

    Example:
        >>> heads_above(torch.tensor([[0.1, 0.9], [0.6, 0.0]]), 0.5)
        ['0.1', '1.0']
    """
    return [f"{layer}.{head}" for layer, head in torch.nonzero(scores > threshold).tolist()]


__all__ = ["repeated_tokens", "corrupted_first_copy", "attention_patterns", "previous_token_scores", "induction_scores", "mask_scores",
           "duplicate_token_mask", "induction_mask", "duplicate_token_scores", "text_induction_scores", "heads_above"]
