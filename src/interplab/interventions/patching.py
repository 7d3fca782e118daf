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
direct path into chosen receivers (heads' q/k/v inputs, or the logits): each receiver
sees the corrupted residual stream plus the sender's clean-minus-corrupted output, and
nothing else changes upstream of the receivers.

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

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import cache, write_hooks

Metric = Callable[[Tensor], Tensor]

# kind -> (site template, unit axes (of the activation without batch), unit axes per position)
_KINDS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = {
    "resid_pre": ("blocks.{l}.hook_resid_pre", (), (0,)),
    "resid_mid": ("blocks.{l}.hook_resid_mid", (), (0,)),
    "resid_post": ("blocks.{l}.hook_resid_post", (), (0,)),
    "attn_out": ("blocks.{l}.hook_attn_out", (), (0,)),
    "mlp_out": ("blocks.{l}.hook_mlp_out", (), (0,)),
    "z": ("blocks.{l}.attn.hook_z", (1,), (1, 0)),
    "q": ("blocks.{l}.attn.hook_q", (1,), (1, 0)),
    "k": ("blocks.{l}.attn.hook_k", (1,), (1, 0)),
    "v": ("blocks.{l}.attn.hook_v", (1,), (1, 0)),
    "pattern": ("blocks.{l}.attn.hook_pattern", (0,), (0, 1)),
    "neuron": ("blocks.{l}.mlp.hook_post", (1,), (1, 0)),
}
KINDS = tuple(_KINDS)


@dataclass(frozen=True)
class NodeKind:
    """Where a kind of component lives: one site per layer and the unit axes within it."""

    kind: str
    sites: tuple[str, ...]
    unit_axes: tuple[int, ...]

    def grid_shape(self, acts: Sequence[Tensor]) -> tuple[int, ...]:
        """The effect grid's shape: ``[layer, *unit axes]`` for activations ``acts`` (with batch)."""
        shapes = {tuple(a.shape[1 + ax] for ax in self.unit_axes) for a in acts}
        check(len(shapes) == 1, f"Nodes of kind {self.kind} have different sizes across layers; pass a full "
                                "forward pass (no readout positions) to patch them per position.")
        return (len(self.sites), *shapes.pop())

    def units(self, acts: Sequence[Tensor]) -> list[tuple[int, ...]]:
        """Every component index ``(layer, *unit)`` in grid order."""
        return list(itertools.product(*(range(n) for n in self.grid_shape(acts))))

    def mask(self, act: Tensor, unit: tuple[int, ...]) -> Tensor:
        """Boolean mask over ``act`` (with batch) selecting one unit (without the layer index)."""
        m = torch.zeros(act.shape[1:], dtype=torch.bool, device=act.device)
        idx: list[Any] = [slice(None)] * m.dim()
        for ax, i in zip(self.unit_axes, unit):
            idx[ax] = i
        m[tuple(idx)] = True
        return m

    def per_unit(self, x: Tensor) -> Tensor:
        """Sum ``x`` (shaped like the activation, with batch) over everything but the unit axes."""
        axes = [1 + ax for ax in self.unit_axes]
        rest = [d for d in range(x.dim()) if d not in axes]
        return x.permute(*axes, *rest).flatten(len(axes)).sum(-1) if axes else x.sum()


def node_kind(model: torch.nn.Module, kind: str, per_position: bool = False) -> NodeKind:
    """The sites and unit axes of ``kind`` in ``model`` (a :class:`~interplab.models.Transformer`).

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2))
        >>> node_kind(m, "q").sites
        ('blocks.0.attn.hook_q', 'blocks.1.attn.hook_q')
        >>> node_kind(m, "heads")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Unknown component kind 'heads' (known: resid_pre, resid_mid, resid_post, attn_out, mlp_out, z, q, k, v, pattern, neuron).
    """
    check(kind in _KINDS, f"Unknown component kind {kind!r} (known: {', '.join(KINDS)}).")
    template, axes, axes_pos = _KINDS[kind]
    n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
    check(n_layers is not None, f"Component kinds apply to transformers, not {type(model).__name__}.")
    sites = tuple(template.format(l=layer) for layer in range(n_layers))
    hook_dict = getattr(model, "hook_dict", {})
    check(all(s in hook_dict for s in sites), f"This model has no {kind} sites (e.g. {sites[0]}).")
    return NodeKind(kind, sites, axes_pos if per_position else axes)


def _as_kinds(kinds: str | Sequence[str]) -> list[str]:
    return [kinds] if isinstance(kinds, str) else list(kinds)


def _scalar(value: Tensor) -> Tensor:
    check(value.numel() == 1, f"The metric must return a scalar, got shape {tuple(value.shape)}.")
    return value.reshape(())


def site_patch(model: torch.nn.Module, site: str, value: Tensor, mask: Tensor) -> list[tuple[str, Any]]:
    """Forward hooks writing ``value`` into ``site`` where ``mask`` is true, on the model's real path
    (see :func:`interplab.instrument.write_hooks`: a bridge's ``hook_resid_mid`` is written through
    ``hook_attn_out``).

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2))
        >>> [name for name, _ in site_patch(m, "blocks.0.hook_resid_mid", torch.zeros(4, 8), torch.ones(4, 8) > 0)]
        ['blocks.0.hook_resid_mid']
    """
    def put(act: Tensor, hook: Any) -> Tensor:
        return torch.where(mask, value, act)

    return write_hooks(model, site, put)


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
    specs = [node_kind(model, k, per_position) for k in _as_kinds(kinds)]
    sites = sorted({s for spec in specs for s in spec.sites})
    with torch.no_grad():
        _, clean_acts = cache(model, clean, names=sites, **kw)
        base = _scalar(metric(model(corrupted, **kw)))
        out: dict[str, Tensor] = {}
        total = sum(len(spec.units([clean_acts[s] for s in spec.sites])) for spec in specs)
        bar = tqdm(total=total, disable=quiet, desc="patching", unit="run")
        for spec in specs:
            acts = [clean_acts[s] for s in spec.sites]
            grid = torch.zeros(spec.grid_shape(acts))
            for unit in spec.units(acts):
                site, value = spec.sites[unit[0]], acts[unit[0]]
                mask = spec.mask(value, unit[1:])

                patched = model.run_with_hooks(corrupted, fwd_hooks=site_patch(model, site, value, mask), **kw)
                grid[unit] = _scalar(metric(patched)) - base
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
    corrupted: Tensor,
    metric: Metric,
    sender: tuple[int, int | None],
    receivers: Sequence[tuple[int, int, str] | str],
    model_kwargs: dict[str, Any] | None = None,
) -> Tensor:
    """Effect of a sender's clean output along its direct paths into ``receivers`` only.

    ``sender``: ``(layer, head)`` or ``(layer, None)`` for the MLP of that layer.
    ``receivers``: ``(layer, head, "q" | "k" | "v")`` for a later head's input, or
    ``"logits"`` for the direct path to the unembedding. Each receiver's input is recomputed
    from the corrupted residual stream plus the sender's (clean - corrupted) output, the rest
    of the network runs as usual on the corrupted input. Returns
    ``metric(patched) - metric(corrupted)`` (a scalar tensor).

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
    """
    kw = model_kwargs or {}
    cfg = model.cfg
    s_layer, s_head = sender
    check(0 <= s_layer < cfg.n_layers, f"Sender layer {s_layer} is out of range (the model has {cfg.n_layers}).")
    check(s_head is None or 0 <= s_head < cfg.n_heads, f"Sender head {s_head} is out of range.")
    check(s_head is not None or not cfg.attn_only, "The model has no MLP to send from.")
    parsed: list[tuple[int, int, str] | str] = []
    for r in receivers:
        if r == "logits":
            parsed.append("logits")
            continue
        check(isinstance(r, tuple) and len(r) == 3 and r[2] in ("q", "k", "v"),
              f"A receiver must be (layer, head, 'q'|'k'|'v') or 'logits', got {r!r}.")
        layer, head, _ = r
        n_units = cfg.n_heads if r[2] == "q" else (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        check(s_layer < layer < cfg.n_layers and 0 <= head < n_units,
              f"Receiver {r!r} must be a head in a layer after the sender's ({s_layer}).")
        parsed.append(r)
    L = cfg.n_layers - 1
    names = {_sender_site(sender)} | {f"blocks.{r[0]}.hook_resid_pre" for r in parsed if r != "logits"}
    names.add(f"blocks.{L}.hook_resid_post")
    with torch.no_grad():
        _, clean_acts = cache(model, clean, names=list(names), **kw)
        corrupt_out, corr_acts = cache(model, corrupted, names=list(names), **kw)
        base = _scalar(metric(corrupt_out))
        delta = _component_output(model, clean_acts, sender) - _component_output(model, corr_acts, sender)
        n = corrupted.shape[1]
        q_pos = model.positions_index(kw.get("positions"), n) if hasattr(model, "positions_index") else None
        hooks: list[tuple[str, Callable[..., Tensor]]] = []
        for r in parsed:
            if r == "logits":
                d = delta if q_pos is None else delta[:, q_pos]

                def add(act: Tensor, hook: Any, d: Tensor = d) -> Tensor:
                    return act + d.to(act.dtype)

                hooks.append((f"blocks.{L}.hook_resid_post", add))
                continue
            layer, head, which = r
            block = model.blocks[layer]
            x = block.ln1(corr_acts[f"blocks.{layer}.hook_resid_pre"] + delta)
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
        patched = model.run_with_hooks(corrupted, fwd_hooks=hooks, **kw)
        return _scalar(metric(patched)) - base


__all__ = ["KINDS", "NodeKind", "node_kind", "site_patch", "activation_patching", "path_patching", "Metric"]
