"""Ghost grads: an auxiliary loss that gives dead features a gradient towards useful directions.

Dead features (not active for a while) get a "ghost" activation ``exp(pre)`` of their encoder
pre-activation, or the safer capped ``exp(min(pre, 0))`` (never above 1, so a feature that is
about to come alive cannot blow up). Their summed decoder output is rescaled to half the norm of
the current residual ``x - x_hat`` (the residual is a constant here) and asked to explain it;
the resulting squared error is rescaled per input to the size of the main reconstruction loss.

Variants (:data:`GHOST_VARIANTS`):

- ``original``: as above;
- ``scaled``: the loss multiplied by the fraction of features that are dead (the known fix:
  the auxiliary term fades as the dictionary comes alive);
- ``dead-only``: the ghost loss is computed on the dead features alone: its gradient reaches
  only their own parameters (encoder columns, encoder biases, decoder rows), the shared
  pre-encoder bias ``b_dec`` is detached, so the ghost term cannot move the live features'
  inputs. It keeps the per-input rescale to the reconstruction loss and has no dead-fraction
  factor.
- ``seed-dead-only``: the seed's version of "dead only", kept under its own name for
  comparison: dead features alone as in ``dead-only``, but the plain mean squared ghost error
  (no rescale to the reconstruction loss) multiplied by the fraction of dead features. Its
  size then depends on the residual's scale and falls as features come alive, so early in
  training it is a small, uncalibrated term next to the reconstruction loss.

Example:
    >>> import torch
    >>> from interplab.sae.model import SAE, SAEConfig
    >>> sae = SAE(SAEConfig(d_in=8, d_sae=16), seed=0)
    >>> x = torch.randn(32, 8)
    >>> out = sae.loss(x, l1_coeff=1e-3)
    >>> dead = torch.zeros(16, dtype=torch.bool); dead[:4] = True
    >>> loss = ghost_loss(sae, x, out, dead, "scaled")
    >>> loss.backward(); bool(sae.W_dec.grad[4:].abs().sum() == 0), bool(sae.W_dec.grad[:4].abs().sum() > 0)
    (True, True)
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.errors import check
from interplab.sae.model import SAE, SAEOutput

GHOST_VARIANTS = ("original", "scaled", "dead-only", "seed-dead-only")


def ghost_loss(sae: SAE, x: Tensor, out: SAEOutput, dead: Tensor, variant: str = "original",
               capped: bool = True) -> Tensor:
    """The ghost-grads auxiliary loss for the features marked in ``dead [d_sae]`` (bool).

    ``out`` is :meth:`SAE.loss` on the same ``x``. Returns a scalar (zero when nothing is dead).

    Example: see the module docstring.
    """
    check(variant in GHOST_VARIANTS, f"ghost variant must be one of {', '.join(GHOST_VARIANTS)}, got {variant!r}.")
    if not bool(dead.any()):
        return x.new_zeros(())
    residual = (x - out.x_hat).detach()
    if variant in ("dead-only", "seed-dead-only"):
        pre = (x - sae.b_dec.detach()) @ sae.W_enc[:, dead] + sae.b_enc[dead]
    else:
        pre = out.pre[:, dead]
    act = torch.exp(pre.clamp(max=0.0) if capped else pre)
    ghost_out = act @ sae.W_dec[dead]
    scale = residual.norm(dim=-1) / (2 * ghost_out.norm(dim=-1) + 1e-6)
    ghost_out = ghost_out * scale.detach()[:, None]
    ghost_err = (ghost_out - residual).pow(2).sum(-1)
    if variant == "seed-dead-only":
        return ghost_err.mean() * dead.float().mean()
    main_err = (out.x_hat - x).pow(2).sum(-1).detach()
    loss = ((main_err / (ghost_err.detach() + 1e-6)) * ghost_err).mean()
    if variant == "scaled":
        loss = loss * dead.float().mean()
    return loss
