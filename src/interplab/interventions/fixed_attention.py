"""Fixed attention: replace attention patterns by their dataset mean, or interpolate towards it.

``mean_patterns`` averages each layer's pattern (per head, query and key position) over a
dataset; ``fixed_attention_hooks(means, x)`` gives hooks that set every pattern to
``mean + x * (pattern - mean)`` (``x = 0``: fixed attention, ``x = 1``: the model itself);
``perturbation_scan`` measures accuracy and agreement with the full model along ``x``.

In a 1-layer model with fixed attention the residual stream after attention is a sum of
per-token terms (see :func:`interplab.analysis.filters.effective_embeddings`).

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=3, d_model=8, n_heads=2, d_mlp=16), seed=0)
    >>> toks = torch.randint(0, 6, (20, 3), generator=torch.Generator().manual_seed(0))
    >>> means = mean_patterns(m, toks, positions=[-1])
    >>> means["blocks.0.attn.hook_pattern"].shape
    torch.Size([2, 1, 3])
    >>> out = m.run_with_hooks(toks, fwd_hooks=fixed_attention_hooks(means), positions=[-1])
    >>> out.shape
    torch.Size([20, 1, 6])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from interplab.errors import check
from interplab.instrument import Hook, default_readout, predict, site_values


def pattern_sites(model: Any) -> list[str]:
    """Names of every attention-pattern site of a model.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> pattern_sites(Transformer(TransformerConfig(d_vocab=4, n_ctx=2, d_model=8, n_heads=2, n_layers=2)))
        ['blocks.0.attn.hook_pattern', 'blocks.1.attn.hook_pattern']
    """
    return sorted(name for name in model.hook_dict if name.endswith("attn.hook_pattern"))


@torch.no_grad()
def mean_patterns(model: Any, inputs: Tensor, layers: Sequence[int] | None = None, batch_size: int = 4096,
                  **forward_kwargs: Any) -> dict[str, Tensor]:
    """Mean attention pattern ``[head, query, key]`` of each layer over ``inputs``, by site name.

    Example: see the module docstring.
    """
    sites = pattern_sites(model)
    check(bool(sites), f"{type(model).__name__} has no attention patterns.")
    if layers is not None:
        sites = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
        for s in sites:
            check(s in model.hook_dict, f"The model has no attention site {s}.")
    means: dict[str, Tensor] = {}
    for s in sites:
        # hooks on earlier layers' patterns are not needed: each layer's mean is of the model itself
        means[s] = site_values(model, inputs, s, batch_size, **forward_kwargs).mean(0)
    return means


def fixed_attention_hooks(means: dict[str, Tensor], x: float = 0.0) -> list[tuple[str, Hook]]:
    """Hooks setting each pattern to ``mean + x * (pattern - mean)`` (``x = 0``: fixed attention).

    Example:
        >>> import torch
        >>> (name, hook), = fixed_attention_hooks({"blocks.0.attn.hook_pattern": torch.full((1, 1, 2), 0.5)}, x=0.5)
        >>> hook(torch.tensor([[[[1.0, 0.0]]]]), None).tolist()
        [[[[0.75, 0.25]]]]
    """
    hooks: list[tuple[str, Hook]] = []
    for name, mean in means.items():

        def hook(pattern: Tensor, hook: Any = None, mean: Tensor = mean) -> Tensor:
            check(pattern.shape[1:] == mean.shape, f"The attention pattern has shape {tuple(pattern.shape[1:])} per "
                  f"input but the mean has {tuple(mean.shape)}; use the same positions for both.")
            m = mean.to(pattern.dtype)[None]
            return m + x * (pattern - m) if x != 0.0 else m.expand_as(pattern)

        hooks.append((name, hook))
    return hooks


@torch.no_grad()
def perturbation_scan(
    model: Any,
    inputs: Tensor,
    xs: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    labels: Tensor | None = None,
    means: dict[str, Tensor] | None = None,
    readout: Callable[[Tensor], Tensor] = default_readout,
    **forward_kwargs: Any,
) -> dict[str, list[float]]:
    """Accuracy (if ``labels``) and agreement with the unmodified model for each ``x``.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=3, d_model=8, n_heads=2, d_mlp=16), seed=0)
        >>> toks = torch.randint(0, 6, (30, 3), generator=torch.Generator().manual_seed(0))
        >>> scan = perturbation_scan(m, toks, xs=[0.0, 1.0], positions=[-1])
        >>> scan["agree"][-1]
        1.0
    """
    if means is None:
        means = mean_patterns(model, inputs, **forward_kwargs)
    full = predict(model, inputs, (), readout, **forward_kwargs)
    scan: dict[str, list[float]] = {"x": [float(x) for x in xs], "agree": []}
    if labels is not None:
        scan["acc"] = []
    for x in xs:
        pred = predict(model, inputs, fixed_attention_hooks(means, float(x)), readout, **forward_kwargs)
        scan["agree"].append((pred == full).double().mean().item())
        if labels is not None:
            scan["acc"].append((pred == labels.reshape(pred.shape)).double().mean().item())
    return scan


__all__ = ["pattern_sites", "mean_patterns", "fixed_attention_hooks", "perturbation_scan"]
