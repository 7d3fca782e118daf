"""Feature visualization by input optimization: the input that most excites a unit or direction.

For each target direction ``v`` at a site (a unit is the one-hot direction), gradient ascent on
the input maximizes ``<site(x), v> - l2 * mean(x^2) - tv * TV(x)``, with the input clamped to
the valid range after every step and several random starts; the best start is kept. All
targets and starts are optimized together as one batch, so 200 units take one loop.

Works for any hooked model and site (``HookedRootModule.run_with_hooks``); the site's value is
flattened after the batch axis, so a direction for a conv site has ``C*H*W`` entries.

Example:
    >>> import torch
    >>> from interplab.models import MLP, MLPConfig
    >>> model = MLP(MLPConfig(d_in=3, d_hidden=[4], d_out=2), seed=0)
    >>> with torch.no_grad():
    ...     _ = model.layers[0].W.copy_(torch.eye(3, 4)); _ = model.layers[0].b.zero_()
    >>> x = visualize(model, "layers.0.hook_pre", unit_directions(4, [0, 2]), shape=(3,), steps=50,
    ...               clamp=(-1.0, 1.0), l2=0.0, tv=0.0)
    >>> x[0, 0].item(), x[1, 2].item()  # unit 0 reads input 0, unit 2 reads input 2
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.devices import model_device, model_dtype
from interplab.errors import check
from interplab.instrument import cache, units_index


def unit_directions(d: int, units: int | Sequence[int] | Tensor | None = None) -> Tensor:
    """One-hot directions ``[len(units), d]`` (all ``d`` units if None; any form :func:`~interplab.instrument.units_index` takes).

    Example:
        >>> unit_directions(3, [1]).tolist(), unit_directions(3, -1).tolist()
        ([[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]])
    """
    idx = torch.arange(d) if units is None else units_index(units, d) % d
    return torch.eye(d)[idx]


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels of each image ``[B, ..., H, W]`` -> ``[B]``.

    Example:
        >>> total_variation(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])).tolist()
        [0.5]
    """
    if x.dim() < 3:
        return x.new_zeros(len(x))
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return (dh + dw) / 2


def site_objective(model: Any, x: Tensor, site: str, directions: Tensor, **forward_kwargs: Any) -> Tensor:
    """``<site(x_b), directions_b>`` for each input of the batch (differentiable) -> ``[B]``.

    Example:
        >>> import torch
        >>> from interplab.models import ConvNet, ConvNetConfig
        >>> net = ConvNet(ConvNetConfig(channels1=2, channels2=2, d_fc=4), seed=0)
        >>> site_objective(net, torch.rand(3, 28, 28), "fc1.hook_post", unit_directions(4, [0, 1, 2])).shape
        torch.Size([3])
    """
    check(site in model.hook_dict, f"Unknown activation site {site!r} for {type(model).__name__}.")
    value = cache(model, x, names=site, **forward_kwargs)[1][site].flatten(1)
    check(value.shape[1] == directions.shape[-1],
          f"directions have {directions.shape[-1]} entries but site {site} has {value.shape[1]} per input.")
    return (value * directions.to(value.dtype)).sum(1)


def visualize(
    model: Any,
    site: str,
    directions: Tensor,
    shape: Sequence[int] = (28, 28),
    steps: int = 200,
    lr: float = 0.05,
    l2: float = 0.0,
    tv: float = 0.1,
    n_starts: int = 2,
    clamp: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    quiet: bool = True,
    **forward_kwargs: Any,
) -> Tensor:
    """Inputs ``[k, *shape]`` that maximize each of the ``k`` directions (rows) at ``site``.

    ``l2`` penalizes the mean squared input, ``tv`` its total variation (both relative to the
    objective, which is normalized per target by its first-step magnitude so one setting fits
    units and directions of any scale). Starts are uniform in ``clamp``; Adam with ``lr``.

    Example: see the module docstring.
    """
    device, dtype = model_device(model), model_dtype(model)  # inputs are optimized where the model lives
    directions = torch.as_tensor(directions).to(device=device, dtype=dtype)
    if directions.dim() == 1:
        directions = directions[None]
    check(directions.dim() == 2 and len(directions) > 0, "directions must be a [k, d] matrix with k >= 1.")
    check(steps >= 1 and n_starts >= 1, "steps and n_starts must be at least 1.")
    lo, hi = clamp
    check(lo < hi, f"clamp must be (low, high) with low < high, got {clamp}.")
    k = len(directions)
    g = torch.Generator().manual_seed(seed)
    x = (lo + (hi - lo) * torch.rand(n_starts * k, *shape, generator=g)).to(device, dtype).requires_grad_(True)
    dirs = directions.repeat(n_starts, 1)
    opt = torch.optim.Adam([x], lr=lr * (hi - lo))
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    check(site in model.hook_dict, f"Unknown activation site {site!r} for {type(model).__name__}.")
    try:
        scale = None
        for _ in tqdm(range(steps), disable=quiet, desc="featviz", leave=False):
            obj = site_objective(model, x, site, dirs, **forward_kwargs)
            if scale is None:
                scale = obj.detach().abs().clamp(min=1e-3)
            penalty = l2 * x.pow(2).flatten(1).mean(1) + tv * total_variation(x)
            loss = -(obj / scale - penalty).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(lo, hi)
        with torch.no_grad():
            final = site_objective(model, x, site, dirs, **forward_kwargs).reshape(n_starts, k)
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
    best = final.argmax(0)
    return x.detach().reshape(n_starts, k, *shape)[best, torch.arange(k, device=best.device)]


__all__ = ["unit_directions", "total_variation", "site_objective", "visualize"]
