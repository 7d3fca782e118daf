"""Instrumentation: the one way to read, overwrite and iterate a model's activation sites.

- :class:`Site`: a TransformerLens hook name and an optional index along axis 1; it reads a
  site's value as rows ``[rows, d]`` and writes rows back (what an SAE reads and splices);
- :func:`cache`: the activations at chosen sites in one forward pass (``run_with_cache`` with a
  name filter, extra hooks, optionally as gradient leaves);
- :func:`site_values`: the activations of one or several sites over a dataset, in batches,
  optionally at one position per input (:func:`gather_positions`);
- :func:`run_batches` / :func:`predict`: batched forward passes with hooks and per-input
  values written into sites, and a readout (predicted classes by default);
- :func:`run_with_patches` / :func:`masked_patch`: overwrite sites with other values, only
  where a boolean mask is true (masked injection);
- :func:`site_groups` / :func:`write_hooks`: what makes the above work on a TransformerBridge
  (one hook point known by several names, read once and keyed by the name asked for; writes to
  ``hook_resid_mid`` that reach both the MLP and the skip connection);
- :func:`trace`: iterate a forward pass site by site. The forward pass runs in a greenlet that
  switches back to the caller at each hook, so the loop body sees ``site.name`` and
  ``site.value``, may assign ``site.value = ...`` (or ``site.patch(v, mask)``), may keep any
  value to take gradients later, and the output is ``tr.output`` after the loop. Only one
  trace may be in flight at a time: starting a second one inside the loop of the first raises.

Example:
    >>> import torch
    >>> from interplab.models import MLP, MLPConfig
    >>> m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2), seed=0)
    >>> x = torch.ones(2, 3)
    >>> tr = trace(m, x)
    >>> for site in tr:
    ...     if site.name == "layers.0.hook_post":
    ...         site.value = torch.zeros_like(site.value)
    >>> torch.allclose(tr.output, m.b_U.expand(2, 2))
    True
    >>> [s for s in tr.names]
    ['hook_input', 'layers.0.hook_pre', 'layers.0.hook_post', 'hook_logits']
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from greenlet import greenlet
from torch import Tensor
from transformer_lens import HookedRootModule

from interplab.devices import model_device, to_device
from interplab.errors import InterplabError, check

NameFilter = str | Iterable[str] | Callable[[str], bool] | None
Hook = Callable[[Tensor, Any], Tensor | None]
Hooks = Sequence[tuple[str, Hook]]


@dataclass(frozen=True)
class Site:
    """A hook name and an optional index along axis 1 (``position``; negative allowed).

    ``position`` picks a token position of a sequence model, or an instance of a toy model of
    superposition. :meth:`read` turns the hook's value into rows ``[rows, d]``; :meth:`write`
    puts rows back (for splicing a reconstruction into the forward pass).

    Example:
        >>> s = Site("blocks.0.mlp.hook_post", position=-1)
        >>> a = torch.arange(24.0).reshape(2, 3, 4)
        >>> s.read(a).tolist()
        [[8.0, 9.0, 10.0, 11.0], [20.0, 21.0, 22.0, 23.0]]
        >>> s.write(a, torch.zeros(2, 4))[:, -1].abs().sum().item()
        0.0
    """

    name: str
    position: int | None = None

    def __post_init__(self) -> None:
        pos = self.position
        check(pos is None or (isinstance(pos, numbers.Integral) and not isinstance(pos, bool)),
              f"A site's position must be an int or None, got {pos!r}.")
        if pos is not None:
            object.__setattr__(self, "position", int(pos))

    def read(self, act: Tensor) -> Tensor:
        """Rows ``[rows, d]``: ``act[:, position]`` or every leading index flattened."""
        if self.position is None:
            return act.reshape(-1, act.shape[-1])
        self._check_position(act)
        return act[:, self.position].reshape(-1, act.shape[-1])

    def _check_position(self, act: Tensor) -> None:
        check(act.dim() >= 3, f"Site {self.name} has shape {tuple(act.shape)}, which has no axis 1 to pick "
              f"position {self.position} from.")
        n = act.shape[1]
        check(-n <= self.position < n, f"Position {self.position!r} is out of range for site {self.name}, whose axis 1 has length {n}.")

    def write(self, act: Tensor, rows: Tensor) -> Tensor:
        """A copy of ``act`` with the rows :meth:`read` takes replaced by ``rows``."""
        if self.position is None:
            return rows.reshape(act.shape).to(act)
        self._check_position(act)
        out = act.clone()
        out[:, self.position] = rows.reshape(out[:, self.position].shape).to(act)
        return out


def units_index(units: int | Sequence[int] | Tensor, d: int) -> Tensor:
    """Units along a last axis of size ``d`` as a long index tensor (negative allowed, as in Python).

    Accepts one int, any iterable of ints (list, tuple, range, set: in iteration order;
    repeats kept), an integer tensor or array, or a boolean mask of length ``d``. Raises
    :class:`InterplabError` for an empty, non-integer or out-of-range value.

    Example:
        >>> units_index(2, 4).tolist(), units_index(range(1, 3), 4).tolist(), units_index([-1], 4).tolist()
        ([2], [1, 2], [-1])
        >>> units_index(torch.tensor([True, False, False, True]), 4).tolist()
        [0, 3]
        >>> units_index([0.5], 4)
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: units must be integers, got [0.5].
    """
    check(not isinstance(units, (bool, str, bytes, float)), f"units must be an int or a sequence of ints, got {units!r}.")
    if isinstance(units, numbers.Integral):
        units = [int(units)]
    try:
        idx = torch.as_tensor(units if isinstance(units, Tensor) else list(units))
    except (TypeError, ValueError, RuntimeError):
        raise InterplabError(f"units must be an int or a sequence of ints, got {units!r}.") from None
    check(idx.dim() <= 1, f"units must be one int or a flat sequence of ints, got shape {tuple(idx.shape)}.")
    idx = idx.reshape(-1)
    if idx.dtype == torch.bool:
        check(len(idx) == d, f"A boolean units mask must have length {d}, got {len(idx)}.")
        idx = idx.nonzero().reshape(-1)
    check(len(idx) > 0, "units must name at least one unit.")
    check(not idx.is_floating_point() and not idx.is_complex(), f"units must be integers, got {idx.tolist()}.")
    idx = idx.long()
    check(int(idx.min()) >= -d and int(idx.max()) < d, f"units must lie in {-d}..{d - 1}, got {idx.tolist()}.")
    return idx


def site_filter(model: HookedRootModule, names: NameFilter) -> Callable[[str], bool]:
    """The sites ``names`` selects, as a predicate; checks every named site exists.

    ``names``: None (every site), one site name, any iterable of names (list, tuple, set,
    generator: read once), or a predicate ``name -> bool``. Raises :class:`InterplabError`
    for a name the model does not have or a value of another kind.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2))
        >>> keep = site_filter(m, (n for n in ["hook_input", "hook_logits"]))
        >>> [n for n in m.hook_dict if keep(n)]
        ['hook_input', 'hook_logits']
    """
    if names is None:
        return lambda _: True
    if isinstance(names, str):
        names = (names,)
    elif callable(names):
        return names
    check(isinstance(names, Iterable), f"Site names must be a name, an iterable of names or a predicate, got {names!r}.")
    try:
        wanted = frozenset(names)
    except TypeError:
        raise InterplabError(f"Site names must be strings, got {names!r}.") from None
    unknown = sorted((n for n in wanted if n not in model.hook_dict), key=repr)
    check(not unknown, f"The model has no site named {unknown[0]!r}." if unknown else "")
    return wanted.__contains__


def _read_once(names: NameFilter) -> NameFilter:
    """``names`` with an iterator (e.g. a generator) read into a list, so it can be read twice."""
    if names is None or isinstance(names, str) or callable(names) or not isinstance(names, Iterable):
        return names
    return list(names)


def _on_device(model: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Positional tensor arguments moved to the model's device (dtypes are the model's business)."""
    device = model_device(model)
    return tuple(to_device(a, device) for a in args)


def _generic(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("hook_in", "hook_out")


def site_groups(model: HookedRootModule, names: NameFilter = None) -> list[tuple[str, list[str]]]:
    """The hook points ``names`` selects, once each: ``[(name to hook, [names it is known by])]``.

    A TransformerBridge knows one hook point by several names (``blocks.0.hook_resid_pre`` is
    an alias of its ``blocks.0.hook_in``); the point is hooked once and reported under every
    selected name. The name to hook is the TransformerLens one: a specific name
    (``hook_resid_pre``) before a generic ``hook_in``/``hook_out``, then the shortest. Without
    explicit names, points the model has switched off (a bridge's ``hook_mlp_in`` unless
    ``use_hook_mlp_in``) are left out.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> site_groups(MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2)), ["layers.0.hook_post"])
        [('layers.0.hook_post', ['layers.0.hook_post'])]
    """
    hook_dict = model.hook_dict
    if names is None or callable(names):
        keep = site_filter(model, names)
        wanted = [n for n in hook_dict if keep(n)]
    else:
        wanted = list(dict.fromkeys([names] if isinstance(names, str) else names))
    groups: dict[int, list[str]] = {}
    for n in wanted:
        groups.setdefault(id(hook_dict[n]), []).append(n)
    if names is None or callable(names):
        # a bridge refuses hooks on points switched off by its config (e.g. hook_mlp_in): leave them out
        gated = getattr(model, "_gated_hook_reason", None)
        if gated is not None:
            groups = {k: g for k, g in groups.items() if gated(hook_dict[g[0]].name or g[0]) is None}
        return [(min(g, key=lambda n: (_generic(n), len(n))), g) for g in groups.values()]
    return [(g[0], g) for g in groups.values()]


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early (see :func:`cache`)."""


def cache(model: HookedRootModule, *args: Any, names: NameFilter = None, fwd_hooks: Hooks = (),
          requires_grad: bool = False, stop: bool = False, **kwargs: Any
          ) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Run ``model(*args, **kwargs)`` and return ``(output, {site: activation})`` for ``names``.

    ``names``: one site name, a list of names, a predicate, or None for every site. The
    activations stay in the autograd graph when gradients are enabled; ``requires_grad=True``
    also makes an activation nothing before it needs gradients for (e.g. ``hook_input``) a
    leaf that requires grad, so ``torch.autograd.grad(f(output), acts[name])`` always works.
    ``fwd_hooks`` (TransformerLens ``(name, fn)`` pairs) act in the same pass; at a site they
    also edit, the cache holds the edited value. Raises :class:`InterplabError` for a name
    the model does not have.
    ``stop=True`` (with ``names`` a name or a list of names) ends the forward pass as soon as every
    named site has been reached, skipping the later layers (TransformerLens' ``stop_at_layer`` for
    any model); the output is then None.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2))
        >>> out, acts = cache(m, torch.ones(5, 3), names=["layers.0.hook_post"])
        >>> list(acts), acts["layers.0.hook_post"].shape
        (['layers.0.hook_post'], torch.Size([5, 4]))
    """
    names = _read_once(names)
    site_filter(model, names)
    check(not stop or isinstance(names, (str, list, tuple, set)), "stop=True needs the site names, not a predicate.")
    acts: dict[str, Tensor] = {}
    groups = site_groups(model, names)
    n_names = sum(len(g) for _, g in groups)

    def save(act: Tensor, hook: Any, known_as: list[str]) -> Tensor:
        if requires_grad and not act.requires_grad:
            act = act.detach().requires_grad_(True)
        for n in known_as:  # the names asked for, not hook.name (a bridge's canonical name)
            acts[n] = act
        if stop and len(acts) == n_names:
            raise _Stop
        return act  # returned, so that the pass uses this very tensor (a bridge reshapes e.g. hook_z)

    hooks = [*fwd_hooks, *((n, functools.partial(save, known_as=g)) for n, g in groups)]
    try:
        out = model.run_with_hooks(*_on_device(model, args), fwd_hooks=hooks, **kwargs)
    except _Stop:
        out = None
    return out, acts


def gather_positions(acts: Tensor, positions: Tensor | Sequence[int] | int) -> Tensor:
    """Pick one position per input: ``acts[i, positions[i]]`` from ``acts [N, pos, ...]``.

    ``positions``: one int for all inputs (negative allowed) or ``[N]`` ints, e.g. the last
    token of each input's multi-token name. Returns ``[N, ...]``. Raises
    :class:`InterplabError` when there is no position axis, the count is wrong or a position
    is out of range.

    Example:
        >>> import torch
        >>> a = torch.arange(12.0).reshape(2, 3, 2)
        >>> gather_positions(a, [2, 0]).tolist(), gather_positions(a, -1).tolist()
        ([[4.0, 5.0], [6.0, 7.0]], [[4.0, 5.0], [10.0, 11.0]])
    """
    check(acts.dim() >= 2, f"acts must have a position axis [N, pos, ...], got shape {tuple(acts.shape)}.")
    n, p = acts.shape[:2]
    pos = torch.as_tensor(positions, dtype=torch.long, device=acts.device)
    pos = pos.expand(n) if pos.dim() == 0 else pos.reshape(-1)
    check(len(pos) == n, f"positions must give one position per input ({n}), got {len(pos)}.")
    check(bool(((pos >= -p) & (pos < p)).all()), f"positions must lie in -{p}..{p - 1}.")
    return acts[torch.arange(n, device=acts.device), pos % p]


@torch.no_grad()
def site_values(model: HookedRootModule, inputs: Tensor, site: str | Sequence[str], batch_size: int = 4096,
                fwd_hooks: Hooks = (), position: Tensor | Sequence[int] | int | None = None,
                **forward_kwargs: Any) -> Tensor | dict[str, Tensor]:
    """The activations of ``model`` at ``site`` on ``inputs`` (batched, detached).

    ``site``: one name (returns ``[N, ...]``) or a list of names, all read in the same forward
    passes (returns ``{name: [N, ...]}`` in the order given). ``position`` keeps one position
    per input (an int for all, or ``[N]`` ints, see :func:`gather_positions`): ``[N, ...]``
    without the position axis, gathered batch by batch. ``fwd_hooks`` act in every batch (the
    values are the edited ones where they edit ``site``); ``forward_kwargs`` go to the model
    (e.g. ``positions=[-1]``, which our ``Transformer`` reads out at). Raises
    :class:`InterplabError` for an unknown site, empty inputs or a bad ``batch_size``.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=3, d_model=8, n_heads=2, d_mlp=16))
        >>> x = torch.tensor([[1, 2, 4], [0, 3, 3]])
        >>> site_values(m, x, "blocks.0.hook_resid_mid", positions=[-1]).shape
        torch.Size([2, 1, 8])
        >>> v = site_values(m, x, ["hook_embed", "blocks.0.hook_resid_post"], position=[2, 0])
        >>> list(v), v["blocks.0.hook_resid_post"].shape
        (['hook_embed', 'blocks.0.hook_resid_post'], torch.Size([2, 8]))
    """
    one = isinstance(site, str)
    names = [site] if one else list(site)
    check(len(names) > 0, "Name at least one activation site.")
    for name in names:
        check(isinstance(name, str), f"Site names must be strings, got {name!r}.")
        check(name in model.hook_dict, f"Unknown activation site {name!r} for {type(model).__name__}.")
    check(len(inputs) > 0, "inputs are empty; pass at least one example.")
    check(batch_size >= 1, f"batch_size must be at least 1, got {batch_size}.")
    pos = None if position is None else torch.as_tensor(position, dtype=torch.long)
    if pos is not None and pos.dim() > 0:
        check(pos.numel() == len(inputs), f"position must give one position per input ({len(inputs)}), got {pos.numel()}.")
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    for start in range(0, len(inputs), batch_size):
        acts = cache(model, inputs[start:start + batch_size], names=names, fwd_hooks=fwd_hooks, **forward_kwargs)[1]
        for name in names:
            a = acts[name]
            if pos is not None:
                a = gather_positions(a, pos if pos.dim() == 0 else pos.reshape(-1)[start:start + batch_size])
            parts[name].append(a)
    out = {name: torch.cat(v) for name, v in parts.items()}
    return out[site] if one else out


def default_readout(out: Tensor) -> Tensor:
    """Predicted class per input: argmax of the logits at the last position if there are positions.

    Example:
        >>> import torch
        >>> default_readout(torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])).tolist()
        [0]
    """
    return (out[:, -1] if out.dim() == 3 else out).argmax(-1)


def run_batches(model: HookedRootModule, inputs: Tensor, batch_size: int = 4096, fwd_hooks: Hooks = (),
                values: Mapping[str, Tensor] | None = None, **forward_kwargs: Any) -> Iterator[tuple[slice, Any]]:
    """Run ``model`` on ``inputs`` in batches; yield ``(rows, output)`` for each batch.

    ``rows`` is the slice of ``inputs`` the batch holds. ``fwd_hooks`` act in every batch;
    ``values`` (``{site: [N, ...]}``, one value per input) are written into their sites, each
    batch getting its own rows. Gradients follow the caller's grad mode. Raises
    :class:`InterplabError` for an unknown site or a value that does not fit its site.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=2, d_hidden=[3], d_out=2), seed=0)
        >>> x = torch.randn(5, 2)
        >>> zeros = {"layers.0.hook_post": torch.zeros(5, 3)}
        >>> [(r.start, out.shape[0]) for r, out in run_batches(m, x, batch_size=3, values=zeros)]
        [(0, 3), (3, 2)]
        >>> all(torch.allclose(out, m.b_U) for _, out in run_batches(m, x, batch_size=3, values=zeros))
        True
    """
    check(batch_size >= 1, f"batch_size must be at least 1, got {batch_size}.")
    check(len(inputs) > 0, "inputs are empty; pass at least one example.")
    values = dict(values or {})
    site_filter(model, list(values))
    for start in range(0, len(inputs), batch_size):
        rows = slice(start, start + batch_size)
        hooks = list(fwd_hooks)
        for site, value in values.items():
            def put(act: Tensor, hook: Any, part: Tensor = value[rows], site: str = site) -> Tensor:
                check(act.shape == part.shape, f"A value of shape {tuple(part.shape)} does not fit site {site} "
                      f"of shape {tuple(act.shape)} in this batch.")
                return part.to(act)

            hooks += write_hooks(model, site, put)  # (a bridge's resid_mid: on both paths)
        yield rows, model.run_with_hooks(*_on_device(model, (inputs[rows],)), fwd_hooks=hooks, **forward_kwargs)


@torch.no_grad()
def predict(model: HookedRootModule, inputs: Tensor, fwd_hooks: Hooks = (),
            readout: Callable[[Tensor], Tensor] = default_readout, batch_size: int = 4096,
            values: Mapping[str, Tensor] | None = None, **forward_kwargs: Any) -> Tensor:
    """``readout(output)`` of ``model`` on ``inputs``, batched, with hooks and values (see :func:`run_batches`).

    The default readout gives predicted classes ``[N]``.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> predict(MLP(MLPConfig(d_in=2, d_hidden=[3], d_out=2)), torch.zeros(5, 2)).shape
        torch.Size([5])
    """
    out = [readout(o) for _, o in run_batches(model, inputs, batch_size, fwd_hooks, values, **forward_kwargs)]
    return torch.cat(out)


def masked_patch(act: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
    """``value`` where ``mask`` is true, ``act`` elsewhere (``mask`` broadcasts; None = everywhere).

    Example:
        >>> a, v = torch.zeros(2, 3), torch.ones(2, 3)
        >>> masked_patch(a, v, torch.tensor([True, False, True])).tolist()
        [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    """
    value = value.to(act)
    if mask is None:
        check(value.shape == act.shape or value.dim() <= act.dim(),
              f"A patch of shape {tuple(value.shape)} does not fit a site of shape {tuple(act.shape)}.")
        return value.expand_as(act) if value.shape != act.shape else value
    try:
        return torch.where(mask.to(device=act.device, dtype=torch.bool), value, act)
    except RuntimeError:
        raise InterplabError(
            f"A patch of shape {tuple(value.shape)} with a mask of shape {tuple(mask.shape)} does not fit "
            f"a site of shape {tuple(act.shape)}."
        ) from None


Patch = Tensor | tuple[Tensor, Tensor | None] | Callable[[Tensor], Tensor]


def patch_hooks(patches: Mapping[str, Patch]) -> list[tuple[str, Callable[..., Tensor]]]:
    """Forward hooks that apply ``patches``: ``{site: value | (value, mask) | fn(act) -> act}``.

    Example:
        >>> [name for name, _ in patch_hooks({"hook_input": torch.zeros(3)})]
        ['hook_input']
    """
    hooks = []
    for name, p in patches.items():
        def hook(act: Tensor, hook: Any, p: Patch = p) -> Tensor:
            if callable(p) and not isinstance(p, Tensor):
                return p(act)
            value, mask = p if isinstance(p, tuple) else (p, None)
            return masked_patch(act, value, mask)
        hooks.append((name, hook))
    return hooks


def write_hooks(model: HookedRootModule, site: str, fn: Callable[..., Tensor | None]
                ) -> list[tuple[str, Callable[..., Tensor | None]]]:
    """Forward hooks that apply ``fn(act, hook) -> new act`` at ``site`` on the model's real path.

    Usually just ``[(site, fn)]``. A TransformerBridge's ``blocks.{l}.hook_resid_mid`` is its
    ``ln2.hook_in``: a value written there reaches the MLP but not the skip connection around
    it. There the write goes through the attention output instead: ``attn_out := fn(resid_pre
    + attn_out) - resid_pre``, which sets the residual stream between the sublayers for both
    paths.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2))
        >>> [name for name, _ in write_hooks(m, "blocks.0.hook_resid_mid", lambda a, hook: a)]
        ['blocks.0.hook_resid_mid']
    """
    if site.startswith("blocks.") and site.endswith(".hook_resid_mid"):
        prefix = site[: -len("hook_resid_mid")]
        hook_dict = model.hook_dict
        if site in hook_dict and hook_dict[site] is hook_dict.get(prefix + "ln2.hook_in"):
            seen: dict[str, Tensor] = {}

            def keep(act: Tensor, hook: Any) -> Tensor:
                seen["pre"] = act
                return act  # (a reading hook returns what it keeps)

            def through_attn_out(act: Tensor, hook: Any) -> Tensor:
                new = fn(seen["pre"] + act, hook)
                return act if new is None else new - seen["pre"]

            return [(prefix + "hook_resid_pre", keep), (prefix + "hook_attn_out", through_attn_out)]
    return [(site, fn)]


def run_with_patches(model: HookedRootModule, *args: Any, patches: Mapping[str, Patch], **kwargs: Any) -> Tensor:
    """Run ``model`` with sites overwritten by ``patches`` (see :func:`patch_hooks`).

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2))
        >>> x = torch.randn(5, 3)
        >>> zero_row1 = (torch.zeros(4), torch.tensor([[False], [True], [False], [False], [False]]))
        >>> out = run_with_patches(m, x, patches={"layers.0.hook_post": zero_row1})
        >>> torch.allclose(out[1], m.b_U), torch.allclose(out[0], m(x)[0])
        (True, True)
    """
    site_filter(model, list(patches))
    hooks = [h for name, fn in patch_hooks(patches) for h in write_hooks(model, name, fn)]
    return model.run_with_hooks(*_on_device(model, args), fwd_hooks=hooks, **kwargs)


# -- trace --------------------------------------------------------------------------------

_ACTIVE: list[Trace] = []


class TracedSite:
    """One activation site met during a :func:`trace`: ``name``, ``value`` (assignable).

    ``site.value = v`` replaces the activation for the rest of the forward pass;
    ``site.patch(v, mask)`` replaces it only where ``mask`` is true; ``site.leaf()``
    replaces it by a detached copy that requires grad and returns it, so gradients with
    respect to this site can be taken after the loop.
    """

    __slots__ = ("name", "_value", "index")

    def __init__(self, name: str, value: Tensor, index: int) -> None:
        self.name, self._value, self.index = name, value, index

    @property
    def value(self) -> Tensor:
        return self._value

    @value.setter
    def value(self, v: Tensor) -> None:
        check(isinstance(v, Tensor), f"site {self.name} must be set to a tensor, got {type(v).__name__}.")
        check(v.shape == self._value.shape,
              f"site {self.name} has shape {tuple(self._value.shape)}; a value of shape {tuple(v.shape)} does not fit.")
        self._value = v

    def patch(self, value: Tensor, mask: Tensor | None = None) -> None:
        """Replace the activation by ``value`` where ``mask`` is true (masked injection)."""
        self.value = masked_patch(self._value, value, mask)

    def leaf(self) -> Tensor:
        """Make this site a leaf of the graph (same numbers, ``requires_grad``) and return it."""
        self._value = self._value.detach().requires_grad_(True)
        return self._value

    def __repr__(self) -> str:
        return f"TracedSite({self.name!r}, shape={tuple(self._value.shape)})"


class Trace:
    """A forward pass to iterate site by site; build with :func:`trace`."""

    def __init__(self, model: HookedRootModule, args: tuple[Any, ...], kwargs: dict[str, Any],
                 names: NameFilter) -> None:
        names = _read_once(names)
        self.keep = site_filter(model, names)
        self.model, self.args, self.kwargs = model, args, kwargs
        self.names_arg = names
        self.names: list[str] = []
        self._output: Any = None
        self._finished = False
        self._started = False

    @property
    def output(self) -> Any:
        """The model's output; available once the loop has ended."""
        check(self._finished, "The traced forward pass has not finished; read tr.output after the loop.")
        return self._output

    def _forward(self, caller: greenlet) -> Any:
        def hook(act: Tensor, hook: Any, name: str) -> Tensor:
            site = TracedSite(name, act, len(self.names))
            self.names.append(name)
            caller.switch(site)  # hand the site to the loop body; resume when it asks for the next
            return site._value

        fwd_hooks = [(n, functools.partial(hook, name=n)) for n, _ in site_groups(self.model, self.names_arg)]
        return self.model.run_with_hooks(*self.args, fwd_hooks=fwd_hooks, **self.kwargs)

    def __iter__(self) -> Iterator[TracedSite]:
        check(not self._started, "A trace can be iterated only once; call trace() again for another pass.")
        check(not _ACTIVE, "Another trace is in progress; traces cannot be interleaved (finish its loop first).")
        self._started = True
        _ACTIVE.append(self)
        return self._run()

    def _run(self) -> Iterator[TracedSite]:
        caller = greenlet.getcurrent()
        glet = greenlet(self._forward, parent=caller)
        try:
            item = glet.switch(caller)
            while not glet.dead:
                yield item
                item = glet.switch()
            self._output, self._finished = item, True
        except GeneratorExit:
            # the loop ended early (break or an exception): finish the pass unmodified
            while not glet.dead:
                item = glet.switch()
            self._output, self._finished = item, True
        finally:
            if not glet.dead:  # an error inside the forward pass: stop the greenlet
                glet.throw()
            _ACTIVE.remove(self)


def trace(model: HookedRootModule, *args: Any, names: NameFilter = None, **kwargs: Any) -> Trace:
    """Iterate the forward pass ``model(*args, **kwargs)`` one activation site at a time.

    ``for site in trace(model, x): ...`` visits every site (or those in ``names``) in the order
    the forward pass reaches them; assigning ``site.value`` changes the rest of the pass. The
    numbers are the ones ``model.run_with_hooks`` gives with the same edits as hooks. Breaking
    out of the loop finishes the pass without further edits. Traces cannot be interleaved.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=4, d_model=8, n_heads=2, d_mlp=16))
        >>> x = torch.tensor([[1, 2, 3, 4]])
        >>> tr = trace(m, x)
        >>> for site in tr:
        ...     if site.name == "blocks.0.hook_resid_mid":
        ...         mid = site.leaf()
        >>> (grad,) = torch.autograd.grad(tr.output[0, -1, 0], mid)
        >>> grad.shape
        torch.Size([1, 4, 8])
    """
    return Trace(model, _on_device(model, args), kwargs, names)


__all__ = ["Site", "Hook", "units_index", "site_filter", "cache", "site_groups", "site_values", "gather_positions",
           "default_readout",
           "run_batches", "predict", "masked_patch", "patch_hooks", "write_hooks", "run_with_patches", "trace", "Trace",
           "TracedSite"]
