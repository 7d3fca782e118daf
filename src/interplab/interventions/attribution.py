"""Attribution patching (AtP, AtP*) and direct logit attribution per head and neuron.

AtP estimates every component's activation-patching effect from one clean forward pass and
one corrupted forward and backward pass:
``effect(n) ~ (a_clean(n) - a_corrupted(n)) . dmetric/da(n)`` at the corrupted input.
It returns the same grids as :func:`interplab.interventions.patching.activation_patching`.

AtP* fixes its two failure modes:

1. *Attention saturation*: for query and key nodes the attention softmax is recomputed
   exactly with the patched queries or keys, and only the step from the pattern onwards is
   linearised: ``effect ~ (pattern_patched - pattern_corrupted) . dmetric/dpattern``. Residual
   nodes before a layer, per position, get the same treatment for the layer they feed: its
   heads' outputs are recomputed exactly with that position's clean query, key and value, and
   only the step from there (and the skip connection) is linearised.
2. *Cancellation*: GradDrop. For each layer, the gradient is also taken with that layer's
   contribution to the residual stream cut out of the backward pass; each component keeps
   the estimate of largest magnitude among the plain one and these.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
    >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 5, 3]])
    >>> metric = lambda logits: logits[:, -1, 3].mean()
    >>> est = atp_star(m, clean, corrupt, metric, ["z", "k"])
    >>> est["z"].shape, est["k"].shape
    (torch.Size([2, 2]), torch.Size([2, 2]))
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interplab.analysis.logit_attribution import direct_logit_attribution as unit_attribution
from interplab.analysis.logit_attribution import pull_back
from interplab.errors import check
from interplab.instrument import cache
from interplab.interventions.diagnostics import verification_cost
from interplab.interventions.nodes import Metric, NodeKind, as_kinds, check_readout, metric_value, node_kind
from interplab.models.base import readout_positions


def _corrupted_grads(model: torch.nn.Module, corrupted: Tensor, metric: Metric, sites: list[str],
                     kw: dict[str, Any], drop_layer: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Activations at ``sites`` on the corrupted input and the metric's gradients there.

    With ``drop_layer``, the backward pass does not flow through that layer's attention and
    MLP outputs (GradDrop); the forward numbers are unchanged.
    """
    def stop(act: Tensor, hook: Any) -> Tensor:
        return act.detach()

    stopped = [] if drop_layer is None else [f"blocks.{drop_layer}.{s}" for s in ("hook_attn_out", "hook_mlp_out")
                                             if f"blocks.{drop_layer}.{s}" in model.hook_dict]
    with torch.enable_grad():
        out, acts = cache(model, corrupted, names=sites, fwd_hooks=[(s, stop) for s in stopped], **kw)
        value = metric_value(metric(out))
        # a stopped site passes no gradient back: its own gradient counts as zero; so does a site
        # outside the graph (e.g. a bridge's rotary cos/sin)
        live = [s for s in sites if s not in stopped and acts[s].requires_grad]
        grads = dict(zip(live, torch.autograd.grad(value, [acts[s] for s in live], allow_unused=True)))
    return ({s: a.detach() for s, a in acts.items()},
            {s: (torch.zeros_like(acts[s]) if grads.get(s) is None else grads[s]) for s in sites})


def _linear_estimate(spec: NodeKind, clean: dict[str, Tensor], corr: dict[str, Tensor],
                     grads: dict[str, Tensor]) -> Tensor:
    return torch.stack([spec.per_unit((clean[s] - corr[s]) * grads[s]) for s in spec.sites])


def _scale(model: torch.nn.Module, layer: int) -> float:
    """The factor on ``q . k`` in the attention scores (``attn.scale``, else from the config)."""
    attn = model.blocks[layer].attn
    if hasattr(attn, "scale"):
        return float(attn.scale)
    cfg = model.cfg
    if not getattr(cfg, "use_attn_scale", True):
        return 1.0
    a = getattr(cfg, "attn_scale", -1.0)
    return 1.0 / (a if a and a > 0 else cfg.d_head ** 0.5)


def _rotary(model: torch.nn.Module, acts: dict[str, Tensor], layer: int, x: Tensor) -> Tensor:
    """Rotary position embedding of ``x`` [b, pos, heads, d_head] with the layer's hooked cos/sin
    (Hugging Face convention: the first ``rd`` dimensions rotated in halves; identity without rotary)."""
    cos, sin = acts.get(f"blocks.{layer}.attn.hook_cos"), acts.get(f"blocks.{layer}.attn.hook_sin")
    if getattr(model.cfg, "positional_embedding_type", "") != "rotary" or cos is None or sin is None:
        return x
    rd = cos.shape[-1]
    cos, sin = cos[..., : x.shape[1], None, :], sin[..., : x.shape[1], None, :]  # [b|1, pos, 1, rd]
    r, rest = x[..., :rd], x[..., rd:]
    r1, r2 = r[..., : rd // 2], r[..., rd // 2:]
    return torch.cat([r * cos + torch.cat([-r2, r1], -1) * sin, rest], -1)


def _heads(x: Tensor, n_heads: int) -> Tensor:
    """Key/value heads repeated for the query heads they serve (grouped-query attention)."""
    return x if x.shape[2] == n_heads else x.repeat_interleave(n_heads // x.shape[2], dim=2)


def _qk(model: torch.nn.Module, acts: dict[str, Tensor], layer: int, which: str, pos_acts: dict[str, Tensor]) -> Tensor:
    """Queries or keys as the scores use them: rotated, and (keys) one per query head."""
    p = f"blocks.{layer}.attn."
    x = _rotary(model, pos_acts, layer, acts[p + f"hook_{which}"])
    return x if which == "q" else _heads(x, acts[p + "hook_q"].shape[2])


def _attention_sites(model: torch.nn.Module, layer: int) -> set[str]:
    p = f"blocks.{layer}.attn."
    return {p + "hook_q", p + "hook_k", p + "hook_attn_scores", p + "hook_pattern"} | {
        p + h for h in ("hook_cos", "hook_sin") if p + h in model.hook_dict}


def _check_recomputation(model: torch.nn.Module, corr: dict[str, Tensor], layer: int) -> None:
    """Refuse AtP*'s exact attention step unless ``scale * q . k`` of the hooked (rotated, grouped)
    queries and keys reproduces the model's own attention scores on the corrupted input."""
    p = f"blocks.{layer}.attn."
    s_x = corr[p + "hook_attn_scores"]
    mine = torch.einsum("bqhd,bkhd->bhqk", _qk(model, corr, layer, "q", corr), _qk(model, corr, layer, "k", corr))
    mine = mine * _scale(model, layer)
    ok = torch.isfinite(s_x)
    err = (mine - s_x)[ok].abs().max().item() if ok.any() else 0.0
    tol = max(1e-4, 16 * torch.finfo(s_x.dtype).eps) * max(1.0, s_x[ok].abs().max().item() if ok.any() else 1.0)
    check(err <= tol,
          f"AtP*'s exact attention step cannot reproduce layer {layer}'s attention scores from its hooked queries "
          f"and keys (off by {err:.2g}); use atp or activation_patching for q, k and per-position resid_pre nodes.")


def _group_heads(x: Tensor, n_units: int) -> Tensor:
    """Sum per-query-head estimates ``[H, ...]`` into the ``n_units`` key/value heads they share."""
    return x if x.shape[0] == n_units else x.reshape(n_units, -1, *x.shape[1:]).sum(1)


def _attention_estimate(model: torch.nn.Module, spec: NodeKind, clean: dict[str, Tensor], corr: dict[str, Tensor],
                        grads: dict[str, Tensor], per_position: bool) -> Tensor:
    """AtP* for query/key nodes: exact softmax with the patched q or k, linear after the pattern."""
    rows = []
    for layer, site in enumerate(spec.sites):
        prefix = f"blocks.{layer}.attn."
        _check_recomputation(model, corr, layer)
        n_units = corr[site].shape[2]
        q_x, k_x = _qk(model, corr, layer, "q", corr), _qk(model, corr, layer, "k", corr)
        q_or_k_clean = _qk(model, clean, layer, spec.kind, corr)
        s_x = corr[prefix + "hook_attn_scores"]  # [b, H, q, k], -inf where masked
        p_x, g = corr[prefix + "hook_pattern"], grads[prefix + "hook_pattern"]
        masked = torch.isinf(s_x)
        scale = _scale(model, layer)
        if spec.kind == "q":
            s_new = torch.einsum("bqhd,bkhd->bhqk", q_or_k_clean, k_x) * scale
        else:
            s_new = torch.einsum("bqhd,bkhd->bhqk", q_x, q_or_k_clean) * scale
        s_new = s_new.masked_fill(masked, float("-inf"))
        if spec.kind == "q" or not per_position:
            diff = (s_new.softmax(-1) - p_x) * g  # [b, H, q, k]
            rows.append(_group_heads(diff.sum((0, 2, 3)) if not per_position else diff.sum((0, 3)), n_units))
            continue
        # one key position j patched at a time: column j of the scores takes its new value
        n_k = s_x.shape[-1]
        eye = torch.eye(n_k, dtype=torch.bool, device=s_x.device)[:, None, :]  # [j, 1(q), k]
        per_head = []
        for h in range(s_x.shape[1]):
            s_all = torch.where(eye, s_new[:, h, None], s_x[:, h, None])  # [b, j, q, k]
            d = (s_all.softmax(-1) - p_x[:, h, None]) * g[:, h, None]
            per_head.append(d.nan_to_num().sum((0, 2, 3)))
        rows.append(_group_heads(torch.stack(per_head), n_units))
    return torch.stack(rows)


def _parallel(model: torch.nn.Module) -> bool:
    """Attention and MLP both read the layer's input (GPT-NeoX/Pythia, GPT-J)."""
    return bool(getattr(model.cfg, "parallel_attn_mlp", False))


def _skip_site(model: torch.nn.Module, layer: int) -> str:
    if _parallel(model):  # everything but attention: the input's total gradient minus attention's share
        return f"blocks.{layer}.ln1.hook_out"
    mid = f"blocks.{layer}.hook_resid_mid"
    return mid if mid in model.hook_dict else f"blocks.{layer}.hook_resid_post"


def _skip_term(model: torch.nn.Module, layer: int, site: str, delta: Tensor, corr: dict[str, Tensor],
               grads: dict[str, Tensor]) -> Tensor:
    """The first-order effect ``[n]`` of ``delta`` at each position along every path but the attention
    sublayer's: through the gradient after attention, or, when attention and MLP run in parallel, the
    input's total gradient minus the part that flows back through the attention norm (a VJP of ``ln1``)."""
    if not _parallel(model):
        return (delta * grads[_skip_site(model, layer)]).sum((0, 2))
    with torch.enable_grad():
        x = corr[site].detach().requires_grad_(True)
        (through_attn,) = torch.autograd.grad(model.blocks[layer].ln1(x), x, grad_outputs=grads[_skip_site(model, layer)])
    return (delta * (grads[site] - through_attn)).sum((0, 2))


def _resid_estimate(model: torch.nn.Module, spec: NodeKind, clean: dict[str, Tensor], corr: dict[str, Tensor],
                    grads: dict[str, Tensor]) -> Tensor:
    """AtP* for residual nodes before a layer, per position: position ``j``'s clean residual gives
    the clean ``q``, ``k``, ``v`` at ``j`` (the norm is per position), so the heads' outputs ``z``
    with them patched in are recomputed exactly; the step from ``z`` onwards and the skip
    connection (gradient after the attention sublayer; with attention and MLP in parallel, the
    input's gradient less the attention norm's share) stay linear."""
    rows = []
    for layer, site in enumerate(spec.sites):
        p = f"blocks.{layer}.attn."
        _check_recomputation(model, corr, layer)
        delta = clean[site] - corr[site]  # [b, n, d]
        skip = _skip_term(model, layer, site, delta, corr, grads)  # [n]
        n_heads = corr[p + "hook_q"].shape[2]
        q_c, k_c, v_c = (_qk(model, clean, layer, "q", corr), _qk(model, clean, layer, "k", corr),
                         _heads(clean[p + "hook_v"], n_heads))
        q_x, k_x, v_x = (_qk(model, corr, layer, "q", corr), _qk(model, corr, layer, "k", corr),
                         _heads(corr[p + "hook_v"], n_heads))
        s_x, p_x = corr[p + "hook_attn_scores"], corr[p + "hook_pattern"]
        z_x, g_z = corr[p + "hook_z"], grads[p + "hook_z"]
        masked, scale = torch.isinf(s_x), _scale(model, layer)
        col = torch.einsum("bqhd,bkhd->bhqk", q_x, k_c) * scale  # queries as corrupted, key j clean
        row = torch.einsum("bqhd,bkhd->bhqk", q_c, k_x) * scale  # query j clean, keys as corrupted
        both = torch.einsum("bqhd,bqhd->bhq", q_c, k_c) * scale  # query j and key j clean
        attn = []
        for j in range(s_x.shape[-1]):
            s = s_x.clone()
            s[..., j] = col[..., j]
            s[..., j, :] = row[..., j, :]
            s[..., j, j] = both[..., j]
            v = v_x.clone()
            v[:, j] = v_c[:, j]
            z = torch.einsum("bhqk,bkhd->bqhd", s.masked_fill(masked, float("-inf")).softmax(-1).nan_to_num(), v)
            attn.append(((z - z_x) * g_z).sum())
        rows.append(skip + torch.stack(attn))
    return torch.stack(rows)


def _estimates(model: torch.nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
               kinds: str | Sequence[str], per_position: bool, model_kwargs: dict[str, Any] | None,
               star: bool, grad_drop: bool) -> Any:
    kw = model_kwargs or {}
    check(clean.shape == corrupted.shape,
          f"clean and corrupted inputs must have the same shape, got {tuple(clean.shape)} and {tuple(corrupted.shape)}.")
    specs = [node_kind(model, k, per_position) for k in as_kinds(kinds)]
    check_readout(specs, per_position, kw.get("positions"), clean.shape[-1])
    sites = {s for spec in specs for s in spec.sites}
    attn_kinds = [spec for spec in specs if star and spec.kind in ("q", "k")]
    full_pass = readout_positions(kw.get("positions"), corrupted.shape[-1]) is None
    resid_kinds = [spec for spec in specs if star and per_position and spec.kind == "resid_pre" and full_pass]
    check(not resid_kinds or not _parallel(model) or all(_skip_site(model, layer) in model.hook_dict
                                                           for layer in range(model.cfg.n_layers)),
          "AtP* needs the attention norm's output (ln1.hook_out) to separate per-position resid_pre nodes' "
          "attention path in this parallel-attention model; use atp or activation_patching for them.")
    for spec in attn_kinds + resid_kinds:
        for layer in range(len(spec.sites)):
            p = f"blocks.{layer}.attn."
            sites |= _attention_sites(model, layer)
            if spec in resid_kinds:
                sites |= {p + "hook_v", p + "hook_z", _skip_site(model, layer)}
    sites_list = sorted(sites)
    with torch.no_grad():
        _, clean_acts = cache(model, clean, names=sites_list, **kw)
    drops: list[int | None] = [None]
    if star and grad_drop:
        drops += list(range(model.cfg.n_layers))
    results: dict[str, Tensor] = {}
    for drop in drops:
        corr_acts, grads = _corrupted_grads(model, corrupted, metric, sites_list, kw, drop)
        for spec in specs:
            if spec in attn_kinds:
                est = _attention_estimate(model, spec, clean_acts, corr_acts, grads, per_position)
            elif spec in resid_kinds:
                est = _resid_estimate(model, spec, clean_acts, corr_acts, grads)
            else:
                est = _linear_estimate(spec, clean_acts, corr_acts, grads)
            prev = results.get(spec.kind)
            results[spec.kind] = est if prev is None else torch.where(est.abs() > prev.abs(), est, prev)
    out = {k: v.detach().cpu() for k, v in results.items()}
    return out[specs[0].kind] if isinstance(kinds, str) else out


def atp(model: torch.nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric, kinds: str | Sequence[str],
        per_position: bool = False, model_kwargs: dict[str, Any] | None = None) -> Any:
    """Attribution patching: first-order estimates of every component's patching effect.

    Same arguments and output shapes as :func:`~interplab.interventions.patching.activation_patching`.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig, Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=3, d_model=8, n_heads=2, d_mlp=None, bias=False))
        >>> clean, corrupt = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 4]])
        >>> metric = lambda logits: logits[:, -1, 1].mean()
        >>> est = atp(m, clean, corrupt, metric, "resid_post", per_position=True)
        >>> true = metric(m(clean)) - metric(m(corrupt))   # the last layer's output is linear in the logits
        >>> bool(torch.isclose(est[0, 2], true, atol=1e-5))
        True
    """
    return _estimates(model, clean, corrupted, metric, kinds, per_position, model_kwargs, star=False, grad_drop=False)


def atp_star(model: torch.nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric, kinds: str | Sequence[str],
             per_position: bool = False, grad_drop: bool = True, model_kwargs: dict[str, Any] | None = None) -> Any:
    """AtP*: AtP with exact attention recomputation for q/k nodes and GradDrop across layers.

    Same arguments and output shapes as :func:`atp`; ``grad_drop=False`` keeps only the
    attention fix. Costs one clean forward pass and ``1 + n_layers`` corrupted forward and
    backward passes.

    Example: see the module docstring.
    """
    return _estimates(model, clean, corrupted, metric, kinds, per_position, model_kwargs, star=True,
                      grad_drop=grad_drop)


# -- agreement with exhaustive patching -------------------------------------------------------

def agreement(true: Tensor | dict[str, Tensor], estimate: Tensor | dict[str, Tensor], k: int = 10,
              threshold: float = 0.1) -> dict[str, float]:
    """How well estimated effects match exhaustive patching, over all components together.

    ``true`` and ``estimate``: grids (or dicts of grids by kind) of the same shapes. Returns
    ``spearman`` (rank correlation of the magnitudes), ``recall`` (share of the top-``k``
    components by true magnitude that are also in the estimate's top ``k``),
    ``false_negatives`` (components whose true magnitude is at least ``threshold`` times the
    largest but whose estimate's magnitude is below that level: this mixes ranking with
    calibration, as an estimate uniformly half the true effects fails it with a perfect
    ranking), ``missed`` (components above that bar which the estimate does not rank among
    its top ``n``, ``n`` the number above the bar: ranking only), ``verification_cost``
    (components to verify in the estimate's order until all above the bar are found; see
    :func:`~interplab.interventions.diagnostics.verification_cost`) and ``n_components``.
    Where a side's magnitudes are all equal (e.g. all-zero effects) the rank correlation is
    undefined; ``spearman`` is then 1.0 if both sides are constant and 0.0 if one is. Raises
    :class:`InterplabError` for empty grids.

    Example:
        >>> t = torch.tensor([5.0, 3.0, 0.1, 0.0])
        >>> r = agreement(t, torch.tensor([4.0, 0.2, 0.1, 0.0]), k=2)
        >>> r["false_negatives"], r["missed"], r["verification_cost"]
        (1, 0, 2)
        >>> agreement(t, torch.tensor([4.0, 0.0, 0.1, 0.2]), k=2)["missed"]
        1
        >>> agreement(t, t * 2, k=2)["recall"], agreement(t, t * 2, k=2)["spearman"]
        (1.0, 1.0)
        >>> agreement(t, torch.zeros(4))["spearman"]   # a constant estimate ranks nothing
        0.0
    """
    from scipy.stats import spearmanr

    if isinstance(true, dict):
        check(isinstance(estimate, dict) and set(true) == set(estimate), "true and estimate must have the same kinds.")
        keys = sorted(true)
        t = torch.cat([true[key].flatten() for key in keys])
        e = torch.cat([estimate[key].flatten() for key in keys])
    else:
        check(isinstance(estimate, Tensor) and estimate.shape == true.shape, "true and estimate must have the same shape.")
        t, e = true.flatten(), estimate.flatten()
    check(t.numel() > 0, "true and estimate hold no components to compare.")
    check(k >= 1, f"k must be at least 1, got {k}.")
    t, e = t.abs().double(), e.abs().double()
    k = min(k, t.numel())
    top_t = set(t.topk(k).indices.tolist())
    top_e = set(e.topk(k).indices.tolist())
    level = threshold * t.max()
    t_const, e_const = bool((t == t[0]).all()), bool((e == e[0]).all())
    if t_const or e_const:  # a rank correlation with a constant side is undefined
        rho = 1.0 if t_const and e_const else 0.0
    else:
        rho = spearmanr(t.cpu().numpy(), e.cpu().numpy()).statistic
    cost = verification_cost(t, e, threshold)
    return {
        "spearman": float(rho),
        "recall": len(top_t & top_e) / k,
        "false_negatives": int(((t >= level) & (e < level)).sum()),
        "missed": cost["missed_in_top"],
        "verification_cost": cost["cost"],
        "n_components": int(t.numel()),
    }


# -- direct logit attribution ---------------------------------------------------------------

def direct_logit_attribution(model: torch.nn.Module, tokens: Tensor, direction: Tensor, kind: str = "head",
                             model_kwargs: dict[str, Any] | None = None) -> Tensor:
    """Each head's (or MLP neuron's) direct contribution to ``logits . direction``.

    ``direction``: weights over the output vocabulary, ``[d_vocab_out]`` or one per example
    ``[batch, d_vocab_out]`` (e.g. +1 on the answer, -1 on a distractor). A component's
    output is projected on ``W_U @ direction``; with a final LayerNorm the output is centred,
    multiplied by its weight and divided by its scale from the forward pass (frozen). Built on :mod:`interplab.analysis.logit_attribution`
    (``pull_back`` through ``W_U`` and each head's ``W_O`` or the MLP's ``W_out``). Returns ``[batch, pos, layer, head]`` for
    ``kind="head"`` or ``[batch, pos, layer, neuron]`` for ``kind="neuron"``.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=3, d_model=8, n_layers=2, n_heads=2, d_mlp=None,
        ...                                   bias=False))
        >>> x = torch.tensor([[0, 1, 2]])
        >>> d = torch.zeros(6); d[4] = 1.0
        >>> dla = direct_logit_attribution(m, x, d)
        >>> logits, acts = m.run_with_cache(x)
        >>> embed = (acts["hook_embed"] + acts["hook_pos_embed"]) @ m.W_U[:, 4]
        >>> bool(torch.allclose(dla.sum((2, 3)) + embed, logits[..., 4], atol=1e-5))
        True
    """
    check(kind in ("head", "neuron"), f"kind must be 'head' or 'neuron', got {kind!r}.")
    kw = model_kwargs or {}
    cfg = model.cfg
    check(kind == "head" or not cfg.attn_only, "An attention-only model has no neurons to attribute to.")
    n_out = getattr(cfg, "vocab_out", None) or cfg.d_vocab_out  # (a bridge's config: d_vocab_out)
    check(direction.shape[-1] == n_out and direction.dim() in (1, 2),
          f"direction must have shape [{n_out}] or [batch, {n_out}], got {tuple(direction.shape)}.")
    L = cfg.n_layers
    site = "attn.hook_z" if kind == "head" else "mlp.hook_post"
    names = [f"blocks.{layer}.{site}" for layer in range(L)]
    has_ln = "ln_final.hook_scale" in model.hook_dict
    if has_ln:
        names.append("ln_final.hook_scale")
    with torch.no_grad():
        _, acts = cache(model, tokens, names=names, **kw)
        # the logit direction pulled back into the residual stream, one per example
        back = torch.vmap(pull_back, in_dims=(0, None))  # one direction per example
        dirs = direction.to(device=model.W_U.device, dtype=model.W_U.dtype)  # a host direction for a model anywhere
        read = back(dirs[None].expand(tokens.shape[0], -1) if dirs.dim() == 1 else dirs, model.W_U)  # [b, d_model]
        if has_ln:  # LayerNorm centres, divides by its (frozen) scale and multiplies by w
            w = getattr(model.ln_final, "w", None)
            read = read if w is None else read * w
            if not str(getattr(cfg, "normalization_type", "") or "").startswith("RMS"):  # RMSNorm does not centre
                read = read - read.mean(-1, keepdim=True)
            scale = acts["ln_final.hook_scale"]  # [batch, pos', 1]
        out = []
        for layer in range(L):
            block = model.blocks[layer]
            if kind == "head":  # each head writes z_h @ W_O[h]: pull the direction back through W_O[h]
                per_head = [unit_attribution(acts[names[layer]][:, :, h], back(read, block.attn.W_O[h])[:, None])
                            .sum(-1) for h in range(cfg.n_heads)]
                contrib = torch.stack(per_head, -1)
            else:  # each neuron writes post_n * W_out[n]
                contrib = unit_attribution(acts[names[layer]], back(read, block.mlp.W_out)[:, None])
            out.append(contrib)
        q_pos = readout_positions(kw.get("positions"), tokens.shape[1])
        if q_pos is not None:  # the last layer works only at the readout positions: take the others there
            out = [c[:, q_pos] for c in out[:-1]] + [out[-1]]
        result = torch.stack(out, dim=2)
        if has_ln:
            result = result / scale[..., None]
    return result

def compare_attribution(model: torch.nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                        kinds: Sequence[str], k: int = 10, threshold: float = 0.1, quiet: bool = True
                        ) -> dict[str, Any]:
    """Exhaustive activation patching, AtP and AtP* on one model and prompt set, with their agreement.

    Runs each per position over ``kinds`` (prompts ``[batch, pos]``) and returns the three
    effect grids by kind (``true``, ``atp``, ``atpstar``), their wall times in seconds
    (``time_exhaustive``, ``time_atp``, ``time_atpstar``) and :func:`agreement` of each
    estimate with the exhaustive effects (``atp_agreement``, ``atpstar_agreement``). After
    Kramar et al. 2024, "AtP*: An efficient and scalable method for localizing LLM behaviour
    to components". Errors as :func:`atp` and
    :func:`~interplab.interventions.patching.activation_patching`.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=1, n_heads=2, d_mlp=None))
        >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
        >>> r = compare_attribution(m, clean, corrupt, lambda logits: logits[:, -1, 3].mean(), ("z",))
        >>> r["true"]["z"].shape, sorted(r["atpstar_agreement"])[:2]
        (torch.Size([1, 2, 4]), ['false_negatives', 'missed'])
    """
    from interplab.interventions.patching import activation_patching

    t = time.perf_counter()
    true = activation_patching(model, clean, corrupted, metric, kinds, per_position=True, quiet=quiet)
    t_exh = time.perf_counter() - t
    t = time.perf_counter()
    est_atp = atp(model, clean, corrupted, metric, kinds, per_position=True)
    t_atp = time.perf_counter() - t
    t = time.perf_counter()
    est_star = atp_star(model, clean, corrupted, metric, kinds, per_position=True)
    t_star = time.perf_counter() - t
    out: dict[str, Any] = {"true": true, "atp": est_atp, "atpstar": est_star, "time_exhaustive": t_exh,
                           "time_atp": t_atp, "time_atpstar": t_star}
    for name, est in (("atp", est_atp), ("atpstar", est_star)):
        out[name + "_agreement"] = agreement(true, est, k=k, threshold=threshold)
    return out


__all__ = ["atp", "atp_star", "agreement", "direct_logit_attribution", "compare_attribution"]
