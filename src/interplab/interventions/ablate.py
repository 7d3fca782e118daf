"""Ablations: zero, mean, min or resample any site, on some units or on a linear subspace.

An ablation acts on the last axis of a site's value (``d_model`` of a residual stream,
``d_mlp`` of ``mlp.hook_post``, the units of a CNN's fc layer). What it replaces:

- ``units=None, basis=None``: the whole value;
- ``units=[i, j, ...]``: those units, the others untouched;
- ``basis`` (a ``[d, k]`` matrix whose columns span a subspace): the value's coordinates
  along the columns (least squares, ``x = c @ basis.T + rest`` with ``rest`` orthogonal to
  the span), keeping ``rest``. For an orthonormal basis ``c = x @ basis``.

How: ``zero`` sets the coordinates to 0; ``mean`` / ``min`` to their mean / minimum over a
reference set of activations (``min`` is the "not detecting" value of a detector whose
rest value is not zero); ``resample`` takes them from another input's activation (random,
given, or drawn within a class: :func:`resample_indices`).

Example:
    >>> import torch
    >>> from interplab.models import MLP, MLPConfig
    >>> model = MLP(MLPConfig(d_in=4, d_hidden=[8], d_out=2), seed=0)
    >>> x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    >>> site = "layers.0.hook_post"
    >>> from interplab.instrument import site_values
    >>> out = ablate(model, x, site, "mean", units=[0, 1], reference=site_values(model, x, site))
    >>> out.shape
    torch.Size([16, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interplab.devices import model_device, to_device
from interplab.errors import check
from interplab.instrument import Hook, units_index, write_hooks

METHODS = ("zero", "mean", "min", "resample")
Units = int | Sequence[int] | Tensor | None


def _dual(basis: Tensor) -> Tensor:
    """``[d, k]`` matrix ``D`` with ``coordinates = x @ D`` (least squares), in ``basis``'s dtype (solved in at
    least float32: linalg has no bfloat16)."""
    wide = basis.to(torch.promote_types(basis.dtype, torch.float32))
    gram = wide.T @ wide
    check(bool(torch.linalg.matrix_rank(gram.double()) == basis.shape[1]), "basis columns must be linearly independent.")
    return (wide @ torch.linalg.inv(gram)).to(basis.dtype)


def coordinates(x: Tensor, units: Units = None, basis: Tensor | None = None) -> Tensor:
    """The coordinates an ablation acts on: ``x[..., units]``, the basis coordinates, or ``x``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> coordinates(x, units=[2]).tolist(), coordinates(x, basis=torch.tensor([[1.0], [1.0], [0.0]])).tolist()
        ([[3.0]], [[1.5]])
    """
    check(units is None or basis is None, "give units or a basis, not both.")
    if basis is not None:
        check(basis.dim() == 2 and basis.shape[0] == x.shape[-1],
              f"basis must have shape [{x.shape[-1]}, k], got {tuple(basis.shape)}.")
        return x @ _dual(basis.to(x.dtype))
    if units is not None:
        return x[..., units_index(units, x.shape[-1])]
    return x


def replace_coordinates(x: Tensor, new: Tensor, units: Units = None, basis: Tensor | None = None) -> Tensor:
    """``x`` with its coordinates (see :func:`coordinates`) replaced by ``new``, the rest kept.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> replace_coordinates(x, torch.tensor([[0.0]]), units=[1]).tolist()
        [[1.0, 0.0, 3.0]]
        >>> b = torch.tensor([[1.0], [1.0], [0.0]])  # coordinate 1.5 along (1, 1, 0)
        >>> replace_coordinates(x, torch.tensor([[0.0]]), basis=b).tolist()
        [[-0.5, 0.5, 3.0]]
    """
    check(units is None or basis is None, "give units or a basis, not both.")
    if basis is not None:
        basis = basis.to(x.dtype)
        return x + (new - coordinates(x, basis=basis)) @ basis.T
    if units is not None:
        out = x.clone()
        out[..., units_index(units, x.shape[-1])] = new.to(x.dtype)
        return out
    return new.to(x.dtype).expand_as(x).clone()


def resample_indices(
    n: int,
    generator: torch.Generator,
    keys: Tensor | None = None,
    ref_keys: Tensor | None = None,
    scores: Tensor | None = None,
    ref_scores: Tensor | None = None,
    tol: float = 0.0,
) -> Tensor:
    """For each of ``n`` inputs, a random source row of a reference set (``-1``: none allowed).

    Without ``keys`` or ``scores``: uniform over the reference rows (``len(ref_keys)`` or
    ``len(ref_scores)`` if given, else ``n``). ``keys`` (one class key per input): the source
    is drawn among reference rows with the same key (``ref_keys``, default ``keys``: the
    inputs are their own reference). ``scores``: the source's score must lie within ``tol``
    of the input's (``ref_scores``, default ``scores``); both conditions may be combined.
    For a tolerance in quantiles, pass ranks divided by ``n`` as scores.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> keys = torch.tensor([0, 0, 1, 1, 2])
        >>> src = resample_indices(5, g, keys=keys)
        >>> bool((keys[src] == keys).all())
        True
        >>> s = torch.tensor([0.0, 0.1, 0.5, 0.55, 0.9])
        >>> src = resample_indices(5, g, scores=s, tol=0.06)
        >>> bool(((s[src] - s).abs() <= 0.06).all())
        True
    """
    check(tol >= 0, f"tol must be non-negative, got {tol}.")
    if keys is None and scores is None:
        m = n if ref_keys is None else len(ref_keys)
        m = m if ref_scores is None else len(ref_scores)
        return torch.randint(m, (n,), generator=generator)
    if keys is not None:
        keys = torch.as_tensor(keys).reshape(-1).cpu()  # indices are drawn on the CPU generator
        check(len(keys) == n, f"keys must have one entry per input ({n}), got {len(keys)}.")
        ref_keys = keys if ref_keys is None else torch.as_tensor(ref_keys).reshape(-1).cpu()
    if scores is not None:
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu()
        check(len(scores) == n, f"scores must have one entry per input ({n}), got {len(scores)}.")
        ref_scores = scores if ref_scores is None else torch.as_tensor(ref_scores, dtype=torch.float64).reshape(-1).cpu()
    m = len(ref_keys) if ref_keys is not None else len(ref_scores)  # type: ignore[arg-type]
    dest_k = keys if keys is not None else torch.zeros(n, dtype=torch.long)
    src_k = ref_keys if ref_keys is not None else torch.zeros(m, dtype=torch.long)
    dest_s = scores if scores is not None else torch.zeros(n, dtype=torch.float64)
    src_s = ref_scores if ref_scores is not None else torch.zeros(m, dtype=torch.float64)
    check(len(src_k) == len(src_s), "ref_keys and ref_scores must have the same length.")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    out = torch.full((n,), -1, dtype=torch.long)
    for k in torch.unique(dest_k):
        dest = (dest_k == k).nonzero().reshape(-1)
        pool = (src_k == k).nonzero().reshape(-1)
        if len(pool) == 0:
            continue
        sorted_s, order = torch.sort(src_s[pool], stable=True)
        lo = torch.searchsorted(sorted_s, dest_s[dest] - tol, right=False)
        hi = torch.searchsorted(sorted_s, dest_s[dest] + tol, right=True)
        count = hi - lo
        pick = (lo + (u[dest] * count).long().clamp(max=(count - 1).clamp(min=0))).clamp(max=len(pool) - 1)
        out[dest] = torch.where(count > 0, pool[order[pick]], torch.full_like(pick, -1))
    return out


def ablated_coordinates(
    x: Tensor,
    method: str,
    units: Units = None,
    basis: Tensor | None = None,
    reference: Tensor | None = None,
    sources: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The replacement coordinates of an ablation for a batch ``x`` (see the module docstring).

    ``reference``: activations of the reference set at the same site, ``[R, ...]`` (``mean``,
    ``min``, ``resample``; ``resample`` defaults to the batch itself). ``sources``: for
    ``resample``, the reference row for each input (default: random, from ``generator``).

    Example:
        >>> import torch
        >>> ref = torch.tensor([[1.0, 5.0], [3.0, -1.0]])
        >>> ablated_coordinates(torch.zeros(1, 2), "min", reference=ref).tolist()
        [[1.0, -1.0]]
        >>> ablated_coordinates(torch.zeros(1, 2), "resample", reference=ref, sources=torch.tensor([1])).tolist()
        [[3.0, -1.0]]
    """
    check(method in METHODS, f"ablation method must be one of {', '.join(METHODS)}, got {method!r}.")
    c = coordinates(x, units, basis)
    if method == "zero":
        return torch.zeros_like(c)
    if method == "resample" and reference is None:
        reference = x
    check(reference is not None, f"{method} ablation needs reference activations.")
    assert reference is not None
    check(tuple(reference.shape[1:]) == tuple(x.shape[1:]),
          f"reference activations have shape {tuple(reference.shape[1:])} per input, the site has {tuple(x.shape[1:])}.")
    check(len(reference) > 0, f"{method} ablation needs at least one reference activation, got none.")
    ref_c = coordinates(reference.to(x), units, basis)
    if method == "mean":
        return ref_c.mean(0, keepdim=True).expand_as(c)
    if method == "min":
        return ref_c.amin(0, keepdim=True).expand_as(c)
    if sources is None:
        sources = torch.randint(len(ref_c), (len(c),), generator=generator)
    sources = torch.as_tensor(sources, dtype=torch.long)
    check(len(sources) == len(c), f"sources must give one reference row per input ({len(c)}), got {len(sources)}.")
    out = ref_c[sources.clamp(min=0)]
    keep = sources < 0  # no source allowed: keep the input's own value
    if bool(keep.any()):
        out[keep] = c[keep]
    return out


def ablation_hook(
    method: str,
    units: Units = None,
    basis: Tensor | None = None,
    reference: Tensor | None = None,
    sources: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Hook:
    """A TransformerLens hook function performing the ablation on whatever batch it sees.

    Example:
        >>> import torch
        >>> hook = ablation_hook("zero", units=[0])
        >>> hook(torch.ones(2, 3), None).tolist()
        [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    """
    check(method in METHODS, f"ablation method must be one of {', '.join(METHODS)}, got {method!r}.")

    def hook(value: Tensor, hook: Any = None) -> Tensor:
        new = ablated_coordinates(value, method, units, basis, reference, sources, generator)
        return replace_coordinates(value, new, units, basis)

    return hook


@torch.no_grad()
def ablate(
    model: Any,
    inputs: Tensor,
    site: str,
    method: str = "zero",
    units: Units = None,
    basis: Tensor | None = None,
    reference: Tensor | None = None,
    sources: Tensor | None = None,
    seed: int = 0,
    fwd_hooks: Sequence[tuple[str, Hook]] = (),
    **forward_kwargs: Any,
) -> Tensor:
    """Run ``model`` on ``inputs`` with ``site`` ablated; returns the model's output.

    ``reference``: the site's activations on a reference set (e.g. from
    :func:`interplab.instrument.site_values`);
    for ``resample`` it defaults to the batch itself, sources drawn with ``seed`` unless
    given. ``fwd_hooks`` are applied too (e.g. fixed attention); ``forward_kwargs`` go to
    the model (e.g. ``positions=[-1]``).

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=3, d_model=8, n_heads=2, d_mlp=16), seed=0)
        >>> toks = torch.tensor([[1, 2, 4], [3, 0, 4]])
        >>> clean = m(toks)
        >>> same = ablate(m, toks, "blocks.0.hook_resid_mid", "resample", sources=torch.tensor([0, 1]))
        >>> torch.allclose(clean, same)
        True
        >>> torch.allclose(clean, ablate(m, toks, "blocks.0.mlp.hook_post", "zero", units=range(16)))
        False
    """
    check(site in model.hook_dict, f"Unknown activation site {site!r} for {type(model).__name__}.")
    generator = torch.Generator().manual_seed(seed)
    hook = ablation_hook(method, units, basis, reference, sources, generator)
    inputs = to_device(inputs, model_device(model))
    return model.run_with_hooks(inputs, fwd_hooks=[*fwd_hooks, *write_hooks(model, site, hook)], **forward_kwargs)

@torch.no_grad()
def ablate_by_region(
    model: Any,
    inputs: Tensor,
    site: str,
    groups: dict[str, tuple[Units, Tensor]],
    methods: Sequence[str] = ("zero", "min"),
    reference: Tensor | None = None,
    pos: int = 1,
    neg: int = 0,
) -> dict[tuple[str, str], dict[str, float]]:
    """Ablate each group of units with each method and measure the effect split by region.

    ``groups`` maps a name to ``(units, own)``: the units at ``site`` and a boolean mask
    ``[batch]`` of the inputs that are the group's own region (e.g. the inputs its units
    detect). The model's output is ``[batch, n_classes]`` logits. For every non-empty group
    and method, returns under ``(name, method)`` the fraction of inputs whose predicted class
    is unchanged on the own region (``own_agree``) and elsewhere (``other_agree``), and the
    mean change of the logit difference ``logits[:, pos] - logits[:, neg]`` on each
    (``own_dld``, ``other_dld``); a side with no inputs gives ``nan``. Empty groups are
    skipped. Used to test detector groups (EIS VII challenge 1, Casper et al. 2023,
    "Red Teaming Deep Neural Networks with Feature Synthesis Tools").

    Raises :class:`~interplab.errors.InterplabError` for an unknown site or method.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> from interplab.instrument import site_values
        >>> model = MLP(MLPConfig(d_in=4, d_hidden=[8], d_out=2), seed=0)
        >>> x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        >>> own = x[:, 0] > 0
        >>> rows = ablate_by_region(model, x, "layers.0.hook_post", {"g": ([0, 1, 2], own), "none": ([], own)},
        ...                         reference=site_values(model, x, "layers.0.hook_post"))
        >>> sorted(rows), sorted(rows["g", "min"])
        ([('g', 'min'), ('g', 'zero')], ['other_agree', 'other_dld', 'own_agree', 'own_dld'])
    """
    clean = model(inputs)
    labels = clean.argmax(-1)
    ld = clean[..., pos] - clean[..., neg]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name, (units, own) in groups.items():
        for method in methods:
            if len(units) == 0:
                continue
            out = ablate(model, inputs, site, method, units=units, reference=reference)
            same = out.argmax(-1) == labels
            d_ld = (out[..., pos] - out[..., neg]) - ld
            rows[(name, method)] = {
                "own_agree": float(same[own].float().mean()) if own.any() else float("nan"),
                "other_agree": float(same[~own].float().mean()) if (~own).any() else float("nan"),
                "own_dld": float(d_ld[own].mean()) if own.any() else float("nan"),
                "other_dld": float(d_ld[~own].mean()) if (~own).any() else float("nan"),
            }
    return rows


__all__ = ["METHODS", "coordinates", "replace_coordinates", "resample_indices", "ablated_coordinates",
           "ablation_hook", "ablate", "ablate_by_region"]
