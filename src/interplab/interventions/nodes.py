"""The node catalogue shared by activation patching and attribution patching.

A *node kind* names one kind of component of a transformer (``z``: a head's output, ``neuron``:
an MLP neuron, ``resid_pre``: the residual stream before a block, ...) by the TransformerLens
site it lives at in each layer and the axes of that site's activation that index its units.
:func:`node_kind` resolves a kind for a model; a :class:`NodeKind` gives the grid of effects
(``[layer, *unit axes]``), the units in grid order and a mask selecting one unit. The table is
in :mod:`interplab.interventions.patching`.

Example:
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2))
    >>> spec = node_kind(m, "z")
    >>> spec.sites, spec.unit_axes
    (('blocks.0.attn.hook_z', 'blocks.1.attn.hook_z'), (1,))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interplab.errors import check
from interplab.models.base import readout_positions

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


# kinds whose last-layer site keeps every position when the model reads out only some
_FULL_LENGTH = ("resid_pre", "k", "v")


def check_readout(kinds: Sequence[NodeKind], per_position: bool, positions: Any, n: int) -> None:
    """Refuse per-position grids of kinds the readout ``positions`` restrict in the last layer.

    With readout positions (see :func:`~interplab.models.base.readout_positions`) the last
    layer computes queries, attention output and MLP only there, so its position axis is not
    the sequence's; ``resid_pre``, ``k`` and ``v`` keep every position.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2))
        >>> check_readout([node_kind(m, "k", True)], True, [-1], 4)
        >>> check_readout([node_kind(m, "z", True)], True, [3, 2, 1, 0], 4)
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Nodes of kind z per position need a full forward pass; drop the readout positions [3, 2, 1, 0].
    """
    q_pos = readout_positions(positions, n)
    if not per_position or q_pos is None or q_pos.tolist() == list(range(n)):
        return
    for spec in kinds:
        check(spec.kind in _FULL_LENGTH, f"Nodes of kind {spec.kind} per position need a full forward pass; drop the "
                                         f"readout positions {q_pos.tolist()}.")


def as_kinds(kinds: str | Sequence[str]) -> list[str]:
    """One kind or a list of kinds, as a list.

    Example:
        >>> as_kinds("z"), as_kinds(("q", "k"))
        (['z'], ['q', 'k'])
    """
    return [kinds] if isinstance(kinds, str) else list(kinds)


def metric_value(value: Tensor) -> Tensor:
    """A metric's output as a 0-d tensor; raises :class:`InterplabError` unless it has one element.

    Example:
        >>> metric_value(torch.tensor([2.0])).shape
        torch.Size([])
        >>> metric_value(torch.zeros(2))
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The metric must return a scalar, got shape (2,).
    """
    check(value.numel() == 1, f"The metric must return a scalar, got shape {tuple(value.shape)}.")
    return value.reshape(())


__all__ = ["KINDS", "Metric", "NodeKind", "node_kind", "check_readout", "as_kinds", "metric_value"]
