"""The sparse autoencoder: untied encoder and decoder, pre-encoder bias, ReLU, unit-norm decoder.

``f = ReLU((x - b_dec) @ W_enc + b_enc)``, ``x_hat = f @ W_dec + b_dec``, loss
``||x - x_hat||^2 + l1_coeff * ||f||_1`` (summed over dimensions, averaged over the batch).
Decoder rows ``W_dec[i]`` have unit norm: before each optimizer step
:meth:`SAE.project_decoder_grad` removes the gradient component parallel to each row, and
after it :meth:`SAE.normalize_decoder` renormalizes. Shapes follow SAELens
(``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``), so the interchange in
:mod:`interplab.sae.saelens` is a copy. ``encode(x, k=...)`` is the top-k readout at inference.

Sites (TransformerLens style): ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post``,
``hook_sae_recons``.

Example:
    >>> import torch
    >>> sae = SAE(SAEConfig(d_in=8, d_sae=32), seed=0)
    >>> x = torch.randn(5, 8)
    >>> out = sae.loss(x, l1_coeff=1e-3)
    >>> out.x_hat.shape, out.f.shape, out.loss.shape
    (torch.Size([5, 8]), torch.Size([5, 32]), torch.Size([]))
    >>> round(float(sae.W_dec.detach().norm(dim=1).mean()), 4)
    1.0
    >>> (sae.encode(x, k=3) > 0).sum(-1).tolist()
    [3, 3, 3, 3, 3]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interplab.errors import check


@dataclass(frozen=True)
class SAEConfig:
    """Shape of an :class:`SAE` and where it reads: ``hook_name`` and ``position`` (see
    :class:`interplab.sae.train.Site`) are stored so a saved SAE knows its site."""

    d_in: int
    d_sae: int
    hook_name: str = ""
    position: int | None = None

    def __post_init__(self) -> None:
        check(self.d_in >= 1 and self.d_sae >= 1, f"d_in and d_sae must be at least 1, got {self.d_in}, {self.d_sae}.")


@dataclass
class SAEOutput:
    """What :meth:`SAE.loss` returns: the loss and its parts, plus the tensors they came from."""

    loss: Tensor
    mse: Tensor
    l1: Tensor
    pre: Tensor
    f: Tensor
    x_hat: Tensor


class SAE(HookedRootModule):
    """A sparse autoencoder; see the module docstring."""

    def __init__(self, cfg: SAEConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())  # common init: encoder = decoder transposed
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.hook_sae_input, self.hook_sae_acts_pre = HookPoint(), HookPoint()
        self.hook_sae_acts_post, self.hook_sae_recons = HookPoint(), HookPoint()
        self.setup()

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations ``(x - b_dec) @ W_enc + b_enc``, ``[..., d_sae]``."""
        check(x.shape[-1] == self.cfg.d_in, f"SAE input must end in d_in={self.cfg.d_in}, got shape {tuple(x.shape)}.")
        x = self.hook_sae_input(x.to(self.W_enc))  # the SAE's device and dtype
        return self.hook_sae_acts_pre((x - self.b_dec) @ self.W_enc + self.b_enc)

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        """Feature activations ``ReLU(pre)``; with ``k``, only each row's ``k`` largest are kept.

        Example:
            >>> sae = SAE(SAEConfig(d_in=4, d_sae=6))
            >>> sae.encode(torch.ones(2, 4), k=1).count_nonzero(-1).tolist()
            [1, 1]
        """
        f = F.relu(self.pre_acts(x))
        if k is not None and k < f.shape[-1]:
            top = f.topk(k, dim=-1)
            f = torch.zeros_like(f).scatter(-1, top.indices, top.values)
        return self.hook_sae_acts_post(f)

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction ``f @ W_dec + b_dec``."""
        return self.hook_sae_recons(f.to(self.W_dec) @ self.W_dec + self.b_dec)

    def forward(self, x: Tensor, k: int | None = None) -> Tensor:
        """The reconstruction of ``x`` (top-``k`` readout if ``k`` is given)."""
        return self.decode(self.encode(x, k))

    def loss(self, x: Tensor, l1_coeff: float) -> SAEOutput:
        """Reconstruction (squared L2, summed over ``d_in``) plus ``l1_coeff`` times the L1 of ``f``,
        both averaged over the batch.

        Example: see the module docstring.
        """
        x = x.to(self.W_enc)  # the SAE's device and dtype
        pre = self.pre_acts(x)
        f = self.hook_sae_acts_post(F.relu(pre))
        x_hat = self.decode(f)
        mse = (x_hat - x).pow(2).sum(-1).mean()
        l1 = f.sum(-1).mean()  # f >= 0, so this is the L1 norm
        return SAEOutput(mse + l1_coeff * l1, mse, l1, pre, f, x_hat)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from ``W_dec.grad`` each row's component along that (unit) row.

        Example:
            >>> sae = SAE(SAEConfig(d_in=3, d_sae=2))
            >>> sae.W_dec.grad = sae.W_dec.detach().clone()  # a purely parallel gradient
            >>> sae.project_decoder_grad(); float(sae.W_dec.grad.abs().max()) < 1e-6
            True
        """
        if self.W_dec.grad is None:
            return
        W = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad -= (self.W_dec.grad * W).sum(1, keepdim=True) * W

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @property
    def dictionary(self) -> Tensor:
        """The decoder rows (the learned feature directions), ``[d_sae, d_in]``, detached."""
        return self.W_dec.detach()
