"""A multilayer perceptron of any depth and width, with activation sites per layer.

Sites: ``hook_input``, ``layers.{i}.hook_pre``, ``layers.{i}.hook_post`` for each hidden
layer, and ``hook_logits``. Weights are stored ``W[d_in, d_out]`` as in TransformerLens.

Example:
    >>> import torch
    >>> m = MLP(MLPConfig(d_in=4, d_hidden=(8, 8), d_out=3), seed=0)
    >>> logits, cache = m.run_with_cache(torch.ones(5, 4))
    >>> logits.shape, cache["layers.1.hook_post"].shape
    (torch.Size([5, 3]), torch.Size([5, 8]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from interplab.errors import check
from interplab.models.base import HookedModel, check_nonempty, register

_ACTS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh}


@dataclass(frozen=True)
class MLPConfig:
    """``d_in`` inputs, hidden widths ``d_hidden`` (empty = linear model), ``d_out`` logits."""

    d_in: int
    d_hidden: tuple[int, ...] = (256,)
    d_out: int = 2
    act_fn: str = "relu"
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_hidden", tuple(int(h) for h in self.d_hidden))
        check(self.d_in >= 1 and self.d_out >= 1, "d_in and d_out must be at least 1.")
        check(all(h >= 1 for h in self.d_hidden), f"hidden widths must be at least 1, got {self.d_hidden}.")
        check(self.act_fn in _ACTS, f"act_fn must be one of {', '.join(_ACTS)}, got {self.act_fn!r}.")


class Dense(nn.Module):
    """``x @ W + b`` followed by an activation, with sites hook_pre and hook_post."""

    def __init__(self, d_in: int, d_out: int, act_fn: str, bias: bool) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_in, d_out))
        self.b = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.act = _ACTS[act_fn]
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = x @ self.W
        return self.hook_post(self.act(self.hook_pre(pre if self.b is None else pre + self.b)))


@register
class MLP(HookedModel):
    """Feed-forward network; see the module docstring."""

    config_class = MLPConfig

    def __init__(self, cfg: MLPConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        widths = (cfg.d_in, *cfg.d_hidden)
        self.layers = nn.ModuleList(Dense(a, b, cfg.act_fn, cfg.bias) for a, b in zip(widths[:-1], widths[1:]))
        self.W_U = nn.Parameter(torch.empty(widths[-1], cfg.d_out))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_out)) if cfg.bias else None
        self.hook_input, self.hook_logits = HookPoint(), HookPoint()
        g = self.init_generator()
        with torch.no_grad():  # Kaiming-uniform, as torch.nn.Linear
            for name, p in self.named_parameters():
                if name.endswith("W") or name == "W_U":
                    bound = 1.0 / math.sqrt(p.shape[0])
                    p.uniform_(-bound, bound, generator=g)
        self.setup()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [batch, d_in] floats; returns logits [batch, d_out]."""
        check(
            x.dim() == 2 and x.shape[1] == self.cfg.d_in,
            f"MLP input must have shape [batch, {self.cfg.d_in}], got {tuple(x.shape)}.",
        )
        check_nonempty(x, "MLP inputs")
        x = self.hook_input(x.to(self.W_U.device, self.W_U.dtype))  # integer or float inputs, on the model's device and dtype
        for layer in self.layers:
            x = layer(x)
        logits = x @ self.W_U
        return self.hook_logits(logits if self.b_U is None else logits + self.b_U)
