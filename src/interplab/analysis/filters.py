"""Effective embeddings and filters of a fixed-attention 1-layer transformer.

With attention fixed to its dataset mean ``A_h`` (query at the readout position ``q``), the
residual stream after attention at ``q`` is a sum of one term per input position:

    resid_mid = sum_k E_k[token_k] + c,
    E_k[t] = [k == q] W_E[t] + sum_h A_h[q, k] (W_E[t] + W_pos[k]) W_V^h W_O^h,

with ``c`` collecting ``W_pos[q]``, the biases and the terms of positions whose token is
fixed (e.g. the ``=`` token). These *effective embeddings* are tables like an embedding.
Projecting them on a direction ``v`` gives a value per token for each position; for two
variable positions their outer sum ``(E_A[a] + E_B[b] + c) . v`` is a ``p x p`` *filter
image*, thresholded into a *binary filter*; rules over binary filters are scored against
a model's labels.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> from interplab.interventions.fixed_attention import mean_patterns, fixed_attention_hooks
    >>> from interplab.instrument import site_values
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=3, d_model=8, n_heads=2, d_mlp=16), seed=0)
    >>> a, b = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    >>> toks = torch.stack([a.flatten(), b.flatten(), torch.full((25,), 5)], 1)
    >>> means = mean_patterns(m, toks, positions=[-1])
    >>> eff = effective_embeddings(m, means["blocks.0.attn.hook_pattern"], fixed_tokens={2: 5})
    >>> mid = site_values(m, toks, "blocks.0.hook_resid_mid", fwd_hooks=fixed_attention_hooks(means), positions=[-1])
    >>> bool(torch.allclose(eff.resid(toks), mid[:, -1].double(), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interplab.analysis.directions import OPS, best_threshold
from interplab.errors import check


@dataclass
class EffectiveEmbeddings:
    """``tables[k]`` ``[d_vocab, d_model]`` for each variable position ``k``, and the constant ``c``."""

    tables: dict[int, Tensor]
    constant: Tensor

    def resid(self, tokens: Tensor) -> Tensor:
        """``sum_k tables[k][tokens[:, k]] + c`` for each row of ``tokens``: ``[N, d_model]``."""
        out = self.constant.expand(len(tokens), -1).clone()
        for k, table in self.tables.items():
            out = out + table[tokens[:, k]]
        return out


@torch.no_grad()
def effective_embeddings(model: torch.nn.Module, mean_pattern: Tensor, fixed_tokens: dict[int, int] | None = None,
                         query: int = -1, layer: int = 0) -> EffectiveEmbeddings:
    """Effective embeddings of a 1-layer, LayerNorm-free transformer at query position ``query``.

    ``mean_pattern``: ``[head, query_positions, key_positions]`` (e.g. from
    :func:`interplab.interventions.fixed_attention.mean_patterns`); its last query row is the
    readout row when it has one query row (``positions=[-1]``), else row ``query``.
    ``fixed_tokens``: positions whose token never changes, folded into the constant.

    Example: see the module docstring.
    """
    cfg = model.cfg  # type: ignore[attr-defined]
    check(getattr(cfg, "normalization", "none") == "none", "Effective embeddings need a model without LayerNorm.")
    check(getattr(cfg, "n_layers", 1) == 1 and layer == 0, "Effective embeddings are defined for 1-layer models.")
    fixed = dict(fixed_tokens or {})
    n = mean_pattern.shape[-1]
    q = query % n
    A = (mean_pattern[:, -1] if mean_pattern.shape[1] == 1 else mean_pattern[:, q]).double()  # [H, K]
    attn = model.blocks[layer].attn  # type: ignore[attr-defined]
    W_E, W_pos = model.W_E.double(), model.W_pos.double()  # type: ignore[attr-defined]
    OV = torch.einsum("hdk,hke->hde", attn.W_V.double(), attn.W_O.double())  # [H, D, D]
    const = W_pos[q].clone()
    if attn.bias:
        const += attn.b_O.double() + torch.einsum("h,hk,hke->e", A.sum(-1), attn.b_V.double(), attn.W_O.double())
    tables: dict[int, Tensor] = {}
    for k in range(n):
        # table over the whole vocabulary: sum_h A[h, k] (W_E + W_pos[k]) OV_h
        ov_k = torch.einsum("h,hde->de", A[:, k], OV)
        table = (W_E + W_pos[k]) @ ov_k
        if k == q:
            table = table + W_E
        if k in fixed:
            const += table[fixed[k]]
        else:
            tables[k] = table
    return EffectiveEmbeddings(tables, const)


def filter_image(eff: EffectiveEmbeddings, direction: Tensor, positions: tuple[int, int] = (0, 1),
                 n_values: int | None = None) -> Tensor:
    """``F[a, b] = (E_x[a] + E_y[b] + c) . direction`` for positions ``(x, y)``, a ``p x p`` image.

    Example:
        >>> import torch
        >>> eff = EffectiveEmbeddings({0: torch.eye(3, 2).double(), 1: torch.zeros(3, 2).double()}, torch.zeros(2).double())
        >>> filter_image(eff, torch.tensor([1.0, 0.0])).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x, y = positions
    check(x in eff.tables and y in eff.tables, f"positions {positions} are not both variable positions.")
    v = direction.double().reshape(-1)
    fa, fb = eff.tables[x] @ v, eff.tables[y] @ v
    if n_values is not None:
        fa, fb = fa[:n_values], fb[:n_values]
    return fa[:, None] + fb[None, :] + eff.constant @ v


def binary_filter(image: Tensor, threshold: float) -> Tensor:
    """``image > threshold`` as a boolean image.

    Example:
        >>> import torch
        >>> binary_filter(torch.tensor([[0.0, 2.0]]), 1.0).tolist()
        [[False, True]]
    """
    return image > threshold


def combine(filters: list[Tensor], op: str = "and") -> Tensor:
    """AND (or OR) of binary filters.

    Example:
        >>> import torch
        >>> combine([torch.tensor([True, True]), torch.tensor([True, False])]).tolist()
        [True, False]
    """
    check(op in OPS, f"op must be and or or, got {op!r}.")
    stack = torch.stack([f.bool() for f in filters])
    return stack.all(0) if op == "and" else stack.any(0)


def best_rule(filters: list[Tensor], labels: Tensor) -> tuple[str, tuple[bool, ...], float]:
    """The AND/OR of the filters, each possibly negated, that best matches ``labels``.

    Returns ``(op, negated, agreement)``.

    Example:
        >>> import torch
        >>> f1, f2 = torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
        >>> best_rule([f1, f2], torch.tensor([0, 1, 0, 0]))
        ('and', (False, True), 1.0)
    """
    import itertools

    y = labels.reshape(-1).bool()
    best = ("and", tuple(False for _ in filters), -1.0)
    for op in OPS:
        for neg in itertools.product((False, True), repeat=len(filters)):
            fs = [~f if n else f for f, n in zip(filters, neg)]
            agree = (combine(fs, op).reshape(-1) == y).double().mean().item()
            if agree > best[2] + 1e-12:
                best = (op, neg, agree)
    return best


def additive_filter(image: Tensor) -> tuple[Tensor, Tensor]:
    """The separable image ``g[a] + h[b]`` closest to ``image`` ``[p, q]`` in least squares.

    ``g`` are the row means minus the grand mean, ``h`` the column means: the additive part of
    a two-way table. A filter image of a fixed-attention model is exactly separable; the
    readout of a full model along a direction is separable up to what attention adds.
    Returns ``(g [p], h [q])``.

    Example:
        >>> import torch
        >>> g, h = additive_filter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> g.tolist(), h.tolist(), (g[:, None] + h[None, :]).tolist()
        ([-1.0, 1.0], [2.0, 3.0], [[1.0, 2.0], [3.0, 4.0]])
    """
    check(image.dim() == 2 and image.numel() > 0, "image must be a non-empty 2-d table.")
    x = image.double()
    return x.mean(1) - x.mean(), x.mean(0)


def fit_filter_thresholds(images: list[Tensor], labels: Tensor, op: str = "and",
                          rounds: int = 3) -> tuple[list[float], float]:
    """Thresholds ``t_i`` making ``op`` over ``images[i] > t_i`` agree best with ``labels``.

    Exact coordinate-wise search: each threshold in turn is chosen by :func:`best_threshold`
    on the points where the other filters leave it the deciding one (for AND: where the others
    are above threshold), ``rounds`` times, starting from each filter's own best threshold.
    An OR rule is searched as the AND of the negated filters. ``images`` of any common shape,
    ``labels`` with the same number of elements. Returns ``(thresholds, agreement)``.

    Example:
        >>> import torch
        >>> a, b = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
        >>> t, agree = fit_filter_thresholds([a, b], (a > 3) | (b > 6), "or")
        >>> t, agree
        ([3.5, 6.5], 1.0)
    """
    check(op in OPS, f"op must be and or or, got {op!r}.")
    check(len(images) >= 1, "fit_filter_thresholds needs at least one image.")
    y = labels.reshape(-1).bool()
    vals = torch.stack([img.reshape(-1).double() for img in images], 1)  # [N, m]
    check(len(vals) == len(y), "images and labels must have the same number of elements.")
    if op == "or":  # OR(v_i > t_i) = NOT AND(-v_i > -t_i) (thresholds fall between values)
        vals, y = -vals, ~y
    m = vals.shape[1]
    t = torch.tensor([best_threshold(vals[:, i], y)[0] for i in range(m)], dtype=torch.float64)
    for _ in range(rounds):
        for i in range(m):
            others = torch.ones(len(y), dtype=torch.bool)
            for j in range(m):
                if j != i:
                    others &= vals[:, j] > t[j]
            if bool(others.any()):
                t[i] = best_threshold(vals[others, i], y[others])[0]
    agree = float(((vals > t).all(1) == y).double().mean())
    return ([-float(v) for v in t] if op == "or" else [float(v) for v in t]), agree


def refine_separable_rule(gs: list[Tensor], hs: list[Tensor], labels: Tensor, op: str = "and", steps: int = 300,
                          lr: float = 0.02) -> tuple[list[Tensor], list[Tensor], list[float], float]:
    """Refine a rule ``op`` over ``g_i[a] + h_i[b] > t_i`` on a ``p x q`` table of ``labels``.

    Starting from the filters ``gs`` ``[p]`` and ``hs`` ``[q]`` (e.g. read from a model's
    effective embeddings), a soft rule (a product of sigmoids for AND, its dual for OR) is fitted
    to the labels by Adam for ``steps`` steps, every per-token value free, with the scale of each
    filter fixed by its starting spread; the thresholds are then set exactly by
    :func:`fit_filter_thresholds` (the fit is deterministic). Returns ``(gs, hs, thresholds, agreement)``.

    Example:
        >>> import torch
        >>> x = torch.linspace(-1, 1, 20, dtype=torch.float64)
        >>> labels = (x[:, None] + x[None, :] > 0.3) & (x[:, None] - x[None, :] > -0.5)
        >>> gs, hs, t, agree = refine_separable_rule([x + 0.2, x], [x, -x], labels, "and", steps=100)
        >>> agree
        1.0
    """
    check(op in OPS, f"op must be and or or, got {op!r}.")
    check(len(gs) == len(hs) >= 1, "gs and hs must be non-empty lists of the same length.")
    y = labels.double()
    check(y.shape == (len(gs[0]), len(hs[0])), "labels must be a p x q table matching the filters.")
    spread = [float((g[:, None] + h[None, :]).double().std().clamp(min=1e-12)) for g, h in zip(gs, hs)]
    g = torch.stack([gi.double() / s for gi, s in zip(gs, spread)]).requires_grad_()
    h = torch.stack([hi.double() / s for hi, s in zip(hs, spread)]).requires_grad_()
    images0 = [g[i, :, None].detach() + h[i, None, :].detach() for i in range(len(gs))]
    t0, _ = fit_filter_thresholds(images0, labels, op)
    t = torch.tensor(t0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([g, h, t], lr=lr)
    sharp = 8.0  # sigmoid slope per unit spread
    with torch.enable_grad():
        for _ in range(steps):
            z = sharp * (g[:, :, None] + h[:, None, :] - t[:, None, None])  # [m, p, q]
            if op == "and":
                log_p = torch.nn.functional.logsigmoid(z).sum(0)
                log_not = torch.log1p(-log_p.exp().clamp(max=1 - 1e-9))
            else:
                log_not = torch.nn.functional.logsigmoid(-z).sum(0)
                log_p = torch.log1p(-log_not.exp().clamp(max=1 - 1e-9))
            loss = -(y * log_p + (1 - y) * log_not).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    g, h = g.detach(), h.detach()
    images = [g[i, :, None] + h[i, None, :] for i in range(len(gs))]
    thresholds, agree = fit_filter_thresholds(images, labels, op)
    return list(g), list(h), thresholds, agree


def near_threshold(images: list[Tensor], thresholds: list[float], width: float) -> Tensor:
    """Points whose value in any image lies within ``width`` standard deviations of its threshold.

    Example:
        >>> import torch
        >>> near_threshold([torch.tensor([0.0, 1.0, 2.0, 3.0])], [1.1], 0.2).tolist()
        [False, True, False, False]
    """
    out = torch.zeros_like(images[0], dtype=torch.bool)
    for img, t in zip(images, thresholds):
        out |= (img - t).abs() <= width * img.double().std()
    return out


__all__ = ["EffectiveEmbeddings", "effective_embeddings", "filter_image", "binary_filter", "combine", "best_rule",
           "additive_filter", "fit_filter_thresholds", "refine_separable_rule", "near_threshold"]
