"""Activation patching and path patching: which components carry a behaviour.

Activation patching runs the model on a *corrupted* input and restores one component's
activation from the *clean* input; the effect of that component is
``metric(patched run) - metric(corrupted run)``. Done for every component of a kind, it
gives a grid of effects:

==============  ===================================  ================  ====================
kind            site                                 grid              grid, per_position
==============  ===================================  ================  ====================
resid_pre/...   ``blocks.{l}.hook_resid_pre`` ...    [layer]           [layer, pos]
attn_out        ``blocks.{l}.hook_attn_out``         [layer]           [layer, pos]
mlp_out         ``blocks.{l}.hook_mlp_out``          [layer]           [layer, pos]
z, q, k, v      ``blocks.{l}.attn.hook_{z,q,k,v}``   [layer, head]     [layer, head, pos]
pattern         ``blocks.{l}.attn.hook_pattern``     [layer, head]     [layer, head, query]
neuron          ``blocks.{l}.mlp.hook_post``         [layer, neuron]   [layer, neuron, pos]
==============  ===================================  ================  ====================

``z`` is a head's output (before ``W_O``). The metric maps the model's output to a scalar
(for example the mean logit difference); :mod:`interplab.interventions.attribution` returns
estimates of the same grids (AtP, AtP*) from a few passes.

Path patching (:func:`path_patching`) restores a sender's clean output only along its
direct path into chosen receivers (heads' q/k/v inputs, MLP inputs, or the logits): each
receiver sees the corrupted residual stream plus the sender's clean-minus-corrupted output,
and nothing else changes upstream of the receivers. With reference inputs instead of a
corrupted batch, the paths are mean-ablated: the receivers see the sender's mean output.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
    >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 5, 3]])
    >>> metric = lambda logits: logits[:, -1, 3].mean()
    >>> effects = activation_patching(m, clean, corrupt, metric, "z")
    >>> effects.shape
    torch.Size([2, 2])
    >>> full = activation_patching(m, clean, corrupt, metric, "resid_pre", per_position=True)
    >>> bool(torch.isclose(full[0, 2], metric(m(clean)) - metric(m(corrupt)), atol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import cache, run_with_patches
from interplab.interventions.nodes import Metric, as_kinds, check_readout, metric_value, node_kind
from interplab.models.base import readout_positions


def activation_patching(
    model: torch.nn.Module,
    clean: Tensor,
    corrupted: Tensor,
    metric: Metric,
    kinds: str | Sequence[str],
    per_position: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    quiet: bool = True,
) -> Any:
    """Exhaustive activation patching: one corrupted forward pass per component.

    Returns the grid of effects ``metric(patched) - metric(corrupted)`` for one kind, or a
    dict ``{kind: grid}`` when ``kinds`` is a list (see the module docstring). ``clean`` and
    ``corrupted`` are batches of matched inputs; each corrupted input receives the
    activation of its own clean partner.

    Example: see the module docstring.
    """
    kw = model_kwargs or {}
    check(clean.shape == corrupted.shape,
          f"clean and corrupted inputs must have the same shape, got {tuple(clean.shape)} and {tuple(corrupted.shape)}.")
    specs = [node_kind(model, k, per_position) for k in as_kinds(kinds)]
    check_readout(specs, per_position, kw.get("positions"), clean.shape[-1])
    sites = sorted({s for spec in specs for s in spec.sites})
    with torch.no_grad():
        _, clean_acts = cache(model, clean, names=sites, **kw)
        base = metric_value(metric(model(corrupted, **kw)))
        out: dict[str, Tensor] = {}
        total = sum(len(spec.units([clean_acts[s] for s in spec.sites])) for spec in specs)
        bar = tqdm(total=total, disable=quiet, desc="patching", unit="run")
        for spec in specs:
            acts = [clean_acts[s] for s in spec.sites]
            grid = torch.zeros(spec.grid_shape(acts))
            for unit in spec.units(acts):
                site, value = spec.sites[unit[0]], acts[unit[0]]
                patched = run_with_patches(model, corrupted, patches={site: (value, spec.mask(value, unit[1:]))}, **kw)
                grid[unit] = metric_value(metric(patched)) - base
                bar.update()
            out[spec.kind] = grid
        bar.close()
    return out[specs[0].kind] if isinstance(kinds, str) else out


# -- path patching ------------------------------------------------------------------------

def _component_output(model: torch.nn.Module, acts: dict[str, Tensor], sender: tuple[int, int | None]) -> Tensor:
    """A sender's contribution to the residual stream: head ``(l, h)`` or MLP ``(l, None)``."""
    layer, head = sender
    if head is None:
        return acts[f"blocks.{layer}.hook_mlp_out"]
    W_O = model.blocks[layer].attn.W_O
    return torch.einsum("bpk,kd->bpd", acts[f"blocks.{layer}.attn.hook_z"][:, :, head], W_O[head])


def _sender_site(sender: tuple[int, int | None]) -> str:
    layer, head = sender
    return f"blocks.{layer}.hook_mlp_out" if head is None else f"blocks.{layer}.attn.hook_z"


def path_patching(
    model: torch.nn.Module,
    clean: Tensor,
    corrupted: Tensor | None,
    metric: Metric,
    sender: tuple[int, int | None],
    receivers: Sequence[tuple[int, int, str] | tuple[int, str] | str],
    model_kwargs: dict[str, Any] | None = None,
    reference: Tensor | None = None,
) -> Tensor:
    """Effect of a sender's clean output along its direct paths into ``receivers`` only.

    ``sender``: ``(layer, head)`` or ``(layer, None)`` for the MLP of that layer.
    ``receivers``: ``(layer, head, "q" | "k" | "v")`` for a later head's input,
    ``(layer, "mlp")`` for an MLP's input (a later layer's, or the same layer's when the
    sender is a head), or ``"logits"`` for the direct path to the unembedding. Each
    receiver's input is recomputed from the corrupted residual stream plus the sender's
    (clean - corrupted) output, the rest of the network runs as usual on the corrupted input.
    Returns ``metric(patched) - metric(corrupted)`` (a scalar tensor).

    Mean-ablated paths: with ``reference`` (inputs of the same shape but any batch size) and
    ``corrupted=None``, the model runs on ``clean`` and each receiver instead sees the
    sender's output replaced by its mean over ``reference`` (per position); the return value
    is then ``metric(path-ablated) - metric(clean)``.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=None,
        ...                                   bias=False))
        >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 5, 3]])
        >>> metric = lambda logits: logits[:, -1, 3].mean()
        >>> every_path = [(1, h, x) for h in range(2) for x in "qkv"] + ["logits"]
        >>> total = path_patching(m, clean, corrupt, metric, (0, 1), every_path)
        >>> direct = activation_patching(m, clean, corrupt, metric, "z")[0, 1]
        >>> bool(torch.isclose(total, direct, atol=1e-5))
        True
        >>> m2 = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=32))
        >>> via_mlp = path_patching(m2, clean, None, metric, (0, 0), [(0, "mlp"), (1, "mlp")], reference=corrupt)
        >>> via_mlp.shape
        torch.Size([])
    """
    kw = model_kwargs or {}
    cfg = model.cfg
    s_layer, s_head = sender
    check(0 <= s_layer < cfg.n_layers, f"Sender layer {s_layer} is out of range (the model has {cfg.n_layers}).")
    check(s_head is None or 0 <= s_head < cfg.n_heads, f"Sender head {s_head} is out of range.")
    check(s_head is not None or not cfg.attn_only, "The model has no MLP to send from.")
    check((corrupted is None) != (reference is None),
          "Give either corrupted inputs or reference inputs for mean-ablated paths (one of the two).")
    parsed: list[tuple[int, int, str] | tuple[int, str] | str] = []
    for r in receivers:
        if r == "logits":
            parsed.append("logits")
            continue
        if isinstance(r, tuple) and len(r) == 2 and r[1] == "mlp":
            layer = r[0]
            check(not cfg.attn_only, "The model has no MLP to receive.")
            after = isinstance(layer, int) and (s_layer < layer < cfg.n_layers or (layer == s_layer and s_head is not None))
            check(after, f"Receiver {r!r} must be an MLP after the sender (layer {s_layer}, or the same layer for a head).")
            parsed.append(r)
            continue
        check(isinstance(r, tuple) and len(r) == 3 and r[2] in ("q", "k", "v"),
              f"A receiver must be (layer, head, 'q'|'k'|'v'), (layer, 'mlp') or 'logits', got {r!r}.")
        layer, head, _ = r
        n_units = cfg.n_heads if r[2] == "q" else (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        check(s_layer < layer < cfg.n_layers and 0 <= head < n_units,
              f"Receiver {r!r} must be a head in a layer after the sender's ({s_layer}).")
        parsed.append(r)
    L = cfg.n_layers - 1
    base_input = clean if corrupted is None else corrupted
    names = {_sender_site(sender)} | {f"blocks.{r[0]}.hook_resid_pre" for r in parsed if len(r) == 3}
    names |= {f"blocks.{r[0]}.hook_resid_mid" for r in parsed if len(r) == 2}
    names.add(f"blocks.{L}.hook_resid_post")
    with torch.no_grad():
        base_out, base_acts = cache(model, base_input, names=list(names), **kw)
        base = metric_value(metric(base_out))
        if reference is None:
            _, clean_acts = cache(model, clean, names=list(names), **kw)
            delta = _component_output(model, clean_acts, sender) - _component_output(model, base_acts, sender)
        else:
            check(reference.shape[1:] == clean.shape[1:], f"reference inputs must have shape [*, "
                  f"{', '.join(map(str, clean.shape[1:]))}], got {tuple(reference.shape)}.")
            _, ref_acts = cache(model, reference, names=[_sender_site(sender)], **kw)
            mean = _component_output(model, ref_acts, sender).mean(0, keepdim=True)
            delta = mean - _component_output(model, base_acts, sender)
        n = base_input.shape[1]
        # with readout positions the last layer works only at those positions: a sender there
        # already has them, an earlier sender's output is taken at them for the logits path
        q_pos = readout_positions(kw.get("positions"), n)
        at_readout = delta if q_pos is None or s_layer == L else delta[:, q_pos]
        hooks: list[tuple[str, Callable[..., Tensor]]] = []
        for r in parsed:
            if r == "logits":
                d = at_readout

                def add(act: Tensor, hook: Any, d: Tensor = d) -> Tensor:
                    return act + d.to(act.dtype)

                hooks.append((f"blocks.{L}.hook_resid_post", add))
                continue
            if len(r) == 2:  # an MLP receiver: its pre-activations from the shifted residual stream
                layer = int(r[0])
                block = model.blocks[layer]
                d = at_readout if layer == L else delta
                pre = block.ln2(base_acts[f"blocks.{layer}.hook_resid_mid"] + d) @ block.mlp.W_in
                if block.mlp.bias:
                    pre = pre + block.mlp.b_in

                def set_pre(act: Tensor, hook: Any, pre: Tensor = pre) -> Tensor:
                    return pre.to(act.dtype)

                hooks.append((f"blocks.{layer}.mlp.hook_pre", set_pre))
                continue
            layer, head, which = r
            block = model.blocks[layer]
            x = block.ln1(base_acts[f"blocks.{layer}.hook_resid_pre"] + delta)
            if which == "q" and layer == L and q_pos is not None:
                x = x[:, q_pos]
            W = getattr(block.attn, f"W_{which.upper()}")[head]
            new = x @ W
            bias = getattr(block.attn, f"b_{which.upper()}", None) if getattr(block.attn, "bias", True) else None
            if bias is not None:  # (a bridge has no `bias` flag; its b_Q/b_K/b_V are None without biases)
                new = new + bias[head]

            def replace(act: Tensor, hook: Any, new: Tensor = new, head: int = head) -> Tensor:
                act = act.clone()
                act[:, :, head] = new
                return act

            hooks.append((f"blocks.{layer}.attn.hook_{which}", replace))
        patched = model.run_with_hooks(base_input, fwd_hooks=hooks, **kw)
        return metric_value(metric(patched)) - base


__all__ = ["activation_patching", "path_patching"]
