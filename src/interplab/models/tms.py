"""Toy models of superposition, many instances trained at once.

``h = W x``, ``x' = ReLU(W^T h + b)`` (or linear output), with ``W`` of shape
``[instances, n_hidden, n_features]``: column ``W[i, :, j]`` is feature ``j``'s direction in
instance ``i``. Every instance is an independent model sharing one forward pass.

Sites: ``hook_hidden`` [batch, instances, n_hidden], ``hook_out_pre`` and ``hook_out``
[batch, instances, n_features].

Example:
    >>> import torch
    >>> m = ToyModelOfSuperposition(TMSConfig(n_instances=3, n_features=5, n_hidden=2), seed=0)
    >>> x = torch.rand(10, 3, 5)
    >>> m(x).shape, m.W.shape
    (torch.Size([10, 3, 5]), torch.Size([3, 2, 5]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from interplab.errors import check
from interplab.models.base import HookedModel, check_nonempty, register


@dataclass(frozen=True)
class TMSConfig:
    """``n_instances`` independent models of ``n_features`` -> ``n_hidden`` -> ``n_features``."""

    n_instances: int = 1
    n_features: int = 5
    n_hidden: int = 2
    relu_output: bool = True

    def __post_init__(self) -> None:
        for name in ("n_instances", "n_features", "n_hidden"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}.")


@register
class ToyModelOfSuperposition(HookedModel):
    """See the module docstring."""

    config_class = TMSConfig

    def __init__(self, cfg: TMSConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.W = nn.Parameter(torch.empty(cfg.n_instances, cfg.n_hidden, cfg.n_features))
        self.b = nn.Parameter(torch.zeros(cfg.n_instances, cfg.n_features))
        with torch.no_grad():  # Xavier-normal per instance
            std = (2.0 / (cfg.n_hidden + cfg.n_features)) ** 0.5
            self.W.normal_(0.0, std, generator=self.init_generator())
        self.hook_hidden, self.hook_out_pre, self.hook_out = HookPoint(), HookPoint(), HookPoint()
        self.setup()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [batch, instances, features] -> reconstruction of the same shape."""
        c = self.cfg
        check(
            x.dim() == 3 and tuple(x.shape[1:]) == (c.n_instances, c.n_features),
            f"TMS input must have shape [batch, {c.n_instances}, {c.n_features}], got {tuple(x.shape)}.",
        )
        check_nonempty(x, "TMS inputs")
        x = x.to(self.W.dtype)  # features in the model's dtype
        h = self.hook_hidden(torch.einsum("bif,ihf->bih", x, self.W))
        pre = self.hook_out_pre(torch.einsum("bih,ihf->bif", h, self.W) + self.b)
        return self.hook_out(F.relu(pre) if c.relu_output else pre)
