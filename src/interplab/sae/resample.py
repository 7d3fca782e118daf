"""Resampling dead features: point them at the inputs the SAE reconstructs worst.

For each dead feature, draw an input with probability proportional to the square of the SAE's
loss on it (its squared reconstruction error), set the decoder row to the unit vector along
``x - b_dec``, the encoder column to the same vector scaled to ``enc_scale`` times the mean
norm of the live encoder columns, the encoder bias to zero, and clear the optimizer's moment
estimates for exactly those entries (Adam would otherwise keep pushing the old direction).

Example:
    >>> import torch
    >>> from interplab.sae.model import SAE, SAEConfig
    >>> sae = SAE(SAEConfig(d_in=4, d_sae=8), seed=0)
    >>> x = torch.randn(100, 4)
    >>> dead = torch.zeros(8, dtype=torch.bool); dead[[1, 5]] = True
    >>> resample_dead(sae, x, dead, torch.Generator().manual_seed(0))
    2
    >>> [round(v, 4) for v in sae.W_dec.norm(dim=1)[[1, 5]].tolist()]
    [1.0, 1.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.errors import check
from interplab.sae.model import SAE


@torch.no_grad()
def resample_dead(
    sae: SAE,
    x: Tensor,
    dead: Tensor,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
    enc_scale: float = 0.2,
) -> int:
    """Re-initialize the features marked in ``dead`` from inputs ``x [N, d_in]``; returns how many.

    Example: see the module docstring.
    """
    check(dead.shape == (sae.cfg.d_sae,), f"dead must have shape ({sae.cfg.d_sae},), got {tuple(dead.shape)}.")
    n = int(dead.sum())
    if n == 0:
        return 0
    x, dead = x.to(sae.W_dec), dead.to(sae.W_dec.device)
    err = (sae(x) - x).pow(2).sum(-1)
    weights = err.pow(2)
    if not bool(weights.sum() > 0) or not bool(torch.isfinite(weights).all()):
        weights = torch.ones_like(err)
    # the generator is a CPU one (same picks on every device): sample on the CPU, index on the device
    pick = torch.multinomial(weights.float().cpu(), n, replacement=True, generator=generator).to(x.device)
    v = x[pick] - sae.b_dec
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else sae.W_enc.new_tensor(1.0)
    sae.W_dec[dead] = v
    sae.W_enc[:, dead] = v.T * enc_norm * enc_scale
    sae.b_enc[dead] = 0.0
    if optimizer is not None:
        for param, index in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
    return n
