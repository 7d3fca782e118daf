"""Logit lens: read the next-token distribution off the residual stream after every layer.

nostalgebraist (2020), "interpreting GPT: the logit lens": apply the model's final
normalisation and unembedding to the residual stream after each layer, as if the remaining
layers were skipped, and see how early the answer becomes likely. Works on any model with
TransformerLens sites ``hook_embed``/``blocks.{l}.hook_resid_post``, a ``ln_final`` and either
``unembed`` (TransformerLens / bridge models) or ``W_U`` (+ ``b_U``) (interplab's Transformer).

Rows: ``"embed"`` (the residual stream entering block 0: token plus positional embedding) and
``0 .. n_layers-1`` (after each block); the last row equals the model's own logits.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=7, n_ctx=5, d_model=16, n_layers=2, n_heads=2, d_mlp=32,
    ...                                   normalization="LN"), seed=0)
    >>> x = torch.tensor([[0, 1, 2, 3], [0, 3, 2, 1]])
    >>> lens = logit_lens(m, x, positions=torch.tensor([3, 2]))
    >>> lens.shape, torch.allclose(lens[-1], m(x)[[0, 1], [3, 2]], atol=1e-5)
    (torch.Size([3, 2, 7]), True)
    >>> answer_ranks(lens, torch.tensor([4, 5])).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from interplab.errors import check
from interplab.instrument import cache


def unembed_fn(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """The map from the residual stream ``[..., d_model]`` to logits ``[..., d_vocab]``: final norm, then unembedding.

    Raises :class:`InterplabError` for a model with neither ``unembed`` nor ``W_U``.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=3, d_model=8, n_heads=2, d_mlp=None))
        >>> unembed_fn(m)(torch.zeros(2, 8)).shape
        torch.Size([2, 5])
    """
    norm = getattr(model, "ln_final", None) or torch.nn.Identity()
    if hasattr(model, "unembed"):
        return lambda r: model.unembed(norm(r))
    check(hasattr(model, "W_U"), f"{type(model).__name__} has no unembedding (neither unembed nor W_U).")
    b = getattr(model, "b_U", None)
    return lambda r: F.linear(norm(r), model.W_U.t(), b)


def lens_sites(model: torch.nn.Module) -> list[str]:
    """The residual-stream sites the lens reads: ``blocks.0.hook_resid_pre`` then each ``hook_resid_post``.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> lens_sites(Transformer(TransformerConfig(d_vocab=5, n_ctx=3, d_model=8, n_layers=2, n_heads=2)))
        ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
    """
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]


@torch.no_grad()
def logit_lens(model: torch.nn.Module, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
    """Lens logits ``[n_layers + 1, batch, pos, vocab]``, or ``[n_layers + 1, batch, vocab]`` at
    one position per row when ``positions`` (``[batch]``, negative allowed) is given.

    Example: see the module docstring.
    """
    sites = lens_sites(model)
    _, acts = cache(model, tokens, names=sites)
    resid = torch.stack([acts[s] for s in sites])  # [layer + 1, batch, pos, d_model]
    if positions is not None:
        check(positions.shape == (tokens.shape[0],), "positions must hold one position per row of tokens.")
        resid = resid[:, torch.arange(tokens.shape[0]), positions.to(resid.device) % tokens.shape[1]]
    return unembed_fn(model)(resid)


def answer_ranks(logits: Tensor, answers: Tensor) -> Tensor:
    """Rank of each answer among all tokens (0 = most likely): ``logits`` ``[..., batch, vocab]``,
    ``answers`` ``[batch]`` -> ``[..., batch]`` (ties count in the answer's favour).

    Example:
        >>> answer_ranks(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]]), torch.tensor([2, 2]))
        tensor([1, 1])
    """
    ans = logits.gather(-1, answers.to(logits.device).expand(*logits.shape[:-1]).unsqueeze(-1))
    return (logits > ans).sum(-1)


def answer_logprobs(logits: Tensor, answers: Tensor) -> Tensor:
    """Log-probability of each answer: ``[..., batch, vocab]``, ``[batch]`` -> ``[..., batch]``.

    Example:
        >>> answer_logprobs(torch.zeros(1, 4), torch.tensor([2])).exp()
        tensor([0.2500])
    """
    return logits.float().log_softmax(-1).gather(-1, answers.to(logits.device).expand(*logits.shape[:-1])
                                                 .unsqueeze(-1)).squeeze(-1)


__all__ = ["unembed_fn", "lens_sites", "logit_lens", "answer_ranks", "answer_logprobs"]
