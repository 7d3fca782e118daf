"""Instrumentation: read, overwrite (optionally under a mask) and iterate a model's sites.

Three habits, one module:

- :func:`cache`: the activations at chosen sites (``run_with_cache`` with a name filter);
- :func:`run_with_patches` / :func:`masked_patch`: overwrite sites with other values, only
  where a boolean mask is true (masked injection);
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from greenlet import greenlet
from torch import Tensor
from transformer_lens import HookedRootModule

from interplab.errors import InterplabError, check

NameFilter = str | Iterable[str] | Callable[[str], bool] | None


def _name_filter(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _: True
    if isinstance(names, str):
        return lambda n: n == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda n: n in wanted


def _check_names(model: HookedRootModule, names: NameFilter) -> None:
    if names is None or callable(names):
        return
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in model.hook_dict]
    check(not unknown, f"The model has no site named {unknown[0]!r}." if unknown else "")


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
        keep = _name_filter(names)
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


def cache(model: HookedRootModule, *args: Any, names: NameFilter = None, stop: bool = False, **kwargs: Any
          ) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Run ``model(*args, **kwargs)`` and return ``(output, {site: activation})`` for ``names``.

    ``names``: one site name, a list of names, a predicate, or None for every site. The
    activations stay in the autograd graph when gradients are enabled. ``stop=True`` (with
    ``names`` a name or a list of names) ends the forward pass as soon as every named site has
    been reached, skipping the later layers (TransformerLens' ``stop_at_layer`` for any
    model); the output is then None.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=3, d_hidden=(4,), d_out=2))
        >>> out, acts = cache(m, torch.ones(5, 3), names=["layers.0.hook_post"])
        >>> list(acts), acts["layers.0.hook_post"].shape
        (['layers.0.hook_post'], torch.Size([5, 4]))
    """
    _check_names(model, names)
    check(not stop or isinstance(names, (str, list, tuple, set)), "stop=True needs the site names, not a predicate.")
    acts: dict[str, Tensor] = {}
    groups = site_groups(model, names)
    n_names = sum(len(g) for _, g in groups)

    def save(act: Tensor, hook: Any, known_as: list[str]) -> Tensor:
        for n in known_as:  # the names asked for, not hook.name (a bridge's canonical name)
            acts[n] = act
        if stop and len(acts) == n_names:
            raise _Stop
        return act  # returned, so that the pass uses this very tensor (a bridge reshapes e.g. hook_z)

    hooks = [(n, functools.partial(save, known_as=g)) for n, g in groups]
    try:
        out = model.run_with_hooks(*args, fwd_hooks=hooks, **kwargs)
    except _Stop:
        out = None
    return out, acts


def masked_patch(act: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
    """``value`` where ``mask`` is true, ``act`` elsewhere (``mask`` broadcasts; None = everywhere).

    Example:
        >>> a, v = torch.zeros(2, 3), torch.ones(2, 3)
        >>> masked_patch(a, v, torch.tensor([True, False, True])).tolist()
        [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    """
    value = value.to(act.dtype)
    if mask is None:
        check(value.shape == act.shape or value.dim() <= act.dim(),
              f"A patch of shape {tuple(value.shape)} does not fit a site of shape {tuple(act.shape)}.")
        return value.expand_as(act) if value.shape != act.shape else value
    try:
        return torch.where(mask.to(torch.bool), value, act)
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

            def keep(act: Tensor, hook: Any) -> None:
                seen["pre"] = act

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
    _check_names(model, list(patches))
    hooks = [h for name, fn in patch_hooks(patches) for h in write_hooks(model, name, fn)]
    return model.run_with_hooks(*args, fwd_hooks=hooks, **kwargs)


# -- trace --------------------------------------------------------------------------------

_ACTIVE: list[Trace] = []


class Site:
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
        return f"Site({self.name!r}, shape={tuple(self._value.shape)})"


class Trace:
    """A forward pass to iterate site by site; build with :func:`trace`."""

    def __init__(self, model: HookedRootModule, args: tuple[Any, ...], kwargs: dict[str, Any],
                 names: NameFilter) -> None:
        _check_names(model, names)
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
            site = Site(name, act, len(self.names))
            self.names.append(name)
            caller.switch(site)  # hand the site to the loop body; resume when it asks for the next
            return site._value

        fwd_hooks = [(n, functools.partial(hook, name=n)) for n, _ in site_groups(self.model, self.names_arg)]
        return self.model.run_with_hooks(*self.args, fwd_hooks=fwd_hooks, **self.kwargs)

    def __iter__(self) -> Iterator[Site]:
        check(not self._started, "A trace can be iterated only once; call trace() again for another pass.")
        check(not _ACTIVE, "Another trace is in progress; traces cannot be interleaved (finish its loop first).")
        self._started = True
        _ACTIVE.append(self)
        return self._run()

    def _run(self) -> Iterator[Site]:
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
    return Trace(model, args, kwargs, names)


__all__ = ["cache", "site_groups", "write_hooks", "masked_patch", "patch_hooks", "run_with_patches", "trace", "Trace", "Site"]
