"""Causal scrubbing: test a hypothesis by resampling everything it says does not matter.

A hypothesis is data (:class:`Hypothesis`): one activation site, a coordinate system for
its last axis (the units, or the columns of a ``basis``), and for each coordinate group a
:class:`Group` rule:

- ``keep``: the group keeps the input's own value (except where ``free_where`` holds);
- ``free``: the group's value comes from a random other input;
- ``same``: it comes from an input of the same class, where the class is given by
  ``key`` (one key per input, or a function of the coordinates: "same side of a
  threshold") and/or ``score`` with a tolerance ``tol`` ("similar score"); ``free_where``
  (a mask per input, or a function of the coordinates) makes the draw free where it holds.

Coordinates no group names, and the part of the site outside the basis's span, follow
``rest`` (default ``free``: what a hypothesis does not claim is resampled). Rules are applied
in order, all in one forward pass; a function-valued ``key`` / ``free_where`` is evaluated on
the *current* coordinates for the input (after the groups before it were resampled) and on
the clean coordinates for the candidate sources, so side labels are recomputed after each
group. :func:`scrub` repeats the whole resampling over random draws and reports accuracy
against ground truth and agreement with the clean model, each with a 95% interval.

Example:
    >>> import torch
    >>> from interplab.models import MLP, MLPConfig
    >>> model = MLP(MLPConfig(d_in=2, d_hidden=[4], d_out=2), seed=0)
    >>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    >>> everything = Hypothesis("layers.0.hook_post", groups=(Group(range(4), "keep"),))
    >>> scrub(model, everything, x, n_draws=2).agree
    1.0
    >>> nothing = Hypothesis("layers.0.hook_post", groups=())
    >>> scrub(model, nothing, x, n_draws=2).agree < 1.0
    True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import Hook, default_readout, predict, site_values
from interplab.interventions.ablate import coordinates, resample_indices

RULES = ("keep", "free", "same")
PerInput = Tensor | Callable[[Tensor], Tensor] | None


@dataclass(frozen=True)
class Group:
    """A group of coordinates (basis columns or units) and how it may be resampled.

    ``key``/``score``/``free_where`` are tensors with one entry per input, or functions of
    the coordinates ``[N, ..., k]`` (all of the hypothesis's coordinates) returning ``[N]``.

    Example:
        >>> Group([0], "same", key=lambda c: c[:, 0] > 0.5).rule
        'same'
        >>> Group([0], "maybe")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: A group's rule must be one of keep, free, same, got 'maybe'.
    """

    coords: Sequence[int]
    rule: str = "free"
    key: PerInput = None
    score: PerInput = None
    tol: float = 0.0
    free_where: PerInput = None
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "coords", tuple(int(c) for c in self.coords))
        check(self.rule in RULES, f"A group's rule must be one of {', '.join(RULES)}, got {self.rule!r}.")
        check(self.rule != "same" or self.key is not None or self.score is not None,
              "A 'same' group needs a key or a score that says which inputs are equivalent.")
        check(self.tol >= 0, f"tol must be non-negative, got {self.tol}.")


@dataclass(frozen=True)
class Hypothesis:
    """Site, coordinate system (``basis`` ``[d, k]`` columns, or the units), groups, and ``rest``.

    Example:
        >>> Hypothesis("blocks.0.hook_resid_mid", groups=(Group([0, 1], "keep"),), name="1").rest
        'free'
    """

    site: str
    groups: tuple[Group, ...] = ()
    basis: Tensor | None = None
    rest: str = "free"
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        check(self.rest in ("keep", "free"), f"rest must be keep or free, got {self.rest!r}.")
        seen: set[int] = set()
        for g in self.groups:
            check(not (seen & set(g.coords)), f"Coordinates {sorted(seen & set(g.coords))} are in two groups.")
            seen |= set(g.coords)


@dataclass
class ScrubResult:
    """Outcome of :func:`scrub`: means over draws, 95% intervals, and the per-draw values."""

    name: str
    agree: float
    agree_ci: tuple[float, float]
    acc: float | None = None
    acc_ci: tuple[float, float] | None = None
    clean_acc: float | None = None
    agree_draws: list[float] = field(default_factory=list)
    acc_draws: list[float] = field(default_factory=list)
    unmatched: float = 0.0


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean and Student-t confidence interval of a few numbers (the interval is a point for one).

    Example:
        >>> m, (lo, hi) = mean_ci([0.9, 0.92, 0.94])
        >>> round(m, 3), lo < m < hi
        (0.92, True)
    """
    from scipy import stats

    v = torch.as_tensor(list(values), dtype=torch.float64)
    check(len(v) > 0, "mean_ci needs at least one value.")
    m = v.mean().item()
    if len(v) < 2:
        return m, (m, m)
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * v.std().item() / math.sqrt(len(v))
    return m, (m - half, m + half)


def _per_input(spec: PerInput, coords: Tensor, index: Tensor | None) -> Tensor | None:
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, Tensor):
        out = torch.as_tensor(spec(coords)).cpu()  # per-input labels: sources are drawn on the CPU generator
        check(out.shape[:1] == coords.shape[:1], "A key, score or free_where function must return one value per input.")
        return out.reshape(len(coords), -1)[:, 0] if out.dim() > 1 else out
    t = torch.as_tensor(spec).cpu()
    check(len(t) == len(coords), f"A key, score or free_where tensor must have one entry per input ({len(coords)}).")
    return t if index is None else t[index]


def scrubbed_values(hypothesis: Hypothesis, clean: Tensor, generator: torch.Generator) -> tuple[Tensor, float]:
    """One draw of the scrubbed activations for every input, and the fraction of unmatched draws.

    ``clean``: the site's activations on the inputs (they are also the pool of sources).

    Example:
        >>> import torch
        >>> clean = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
        >>> h = Hypothesis("s", groups=(Group([0], "keep"),))
        >>> new, _ = scrubbed_values(h, clean, torch.Generator().manual_seed(0))
        >>> new[:, 0].tolist()
        [0.0, 1.0, 2.0]
    """
    n = len(clean)
    basis = hypothesis.basis
    coords = coordinates(clean, basis=basis) if basis is not None else clean
    k = coords.shape[-1]
    for g in hypothesis.groups:
        check(all(0 <= c < k for c in g.coords), f"Group coordinates must lie in 0..{k - 1}.")
    cur = coords.clone()
    unmatched = 0
    total = 0
    for g in hypothesis.groups:
        if g.rule == "keep" and g.free_where is None:
            continue
        if g.rule == "keep":
            src = torch.arange(n)
        elif g.rule == "free":
            src = torch.randint(n, (n,), generator=generator)
        else:
            src = resample_indices(
                n, generator,
                keys=_per_input(g.key, cur, None), ref_keys=_per_input(g.key, coords, None),
                scores=_per_input(g.score, cur, None), ref_scores=_per_input(g.score, coords, None), tol=g.tol,
            )
        free = _per_input(g.free_where, cur, None)
        if free is not None:
            anyone = torch.randint(n, (n,), generator=generator)
            src = torch.where(free.bool(), anyone, src)
        miss = src < 0
        unmatched += int(miss.sum())
        total += n
        idx = list(g.coords)
        new = coords[src.clamp(min=0)][..., idx]
        cur[..., idx] = torch.where(miss.to(cur.device).reshape(-1, *([1] * (cur.dim() - 1))), cur[..., idx], new)
    named = {c for g in hypothesis.groups for c in g.coords}
    rest = [c for c in range(k) if c not in named]
    src_rest = torch.randint(n, (n,), generator=generator) if hypothesis.rest == "free" else torch.arange(n)
    if rest:
        cur[..., rest] = coords[src_rest][..., rest]
    if basis is None:
        return cur, unmatched / max(total, 1)
    b = basis.to(clean)
    outside = clean - coords @ b.T
    return cur @ b.T + outside[src_rest], unmatched / max(total, 1)


@torch.no_grad()
def scrub(
    model: Any,
    hypothesis: Hypothesis,
    inputs: Tensor,
    labels: Tensor | None = None,
    n_draws: int = 10,
    seed: int = 0,
    fwd_hooks: Sequence[tuple[str, Hook]] = (),
    readout: Callable[[Tensor], Tensor] = default_readout,
    batch_size: int = 4096,
    quiet: bool = True,
    **forward_kwargs: Any,
) -> ScrubResult:
    """Scrub ``hypothesis`` on ``inputs`` ``n_draws`` times; see the module docstring.

    Sources are drawn from ``inputs`` themselves. ``fwd_hooks`` stay on in every run, the
    clean one included (e.g. fixed attention: then "clean" means the fixed-attention model).
    ``labels``: ground truth for the accuracy. ``readout`` turns the model output into
    predicted classes; ``forward_kwargs`` go to the model (e.g. ``positions=[-1]``).

    Example: see the module docstring.
    """
    return scrub_many(model, [hypothesis], inputs, labels, n_draws, seed, fwd_hooks, readout, batch_size, quiet,
                      **forward_kwargs)[0]


@torch.no_grad()
def scrub_many(
    model: Any,
    hypotheses: Sequence[Hypothesis],
    inputs: Tensor,
    labels: Tensor | None = None,
    n_draws: int = 10,
    seed: int = 0,
    fwd_hooks: Sequence[tuple[str, Hook]] = (),
    readout: Callable[[Tensor], Tensor] = default_readout,
    batch_size: int = 4096,
    quiet: bool = True,
    **forward_kwargs: Any,
) -> list[ScrubResult]:
    """:func:`scrub` for several hypotheses, sharing the clean runs (one column each of a table).

    Each hypothesis gets its own generator seeded from ``seed`` and its name, so adding or
    removing a named hypothesis does not change the others' numbers.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=2, d_hidden=[4], d_out=2), seed=0)
        >>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> hs = [Hypothesis("layers.0.hook_post", (Group(range(4), "keep"),), name="all"),
        ...       Hypothesis("hook_input", (Group([0, 1], "keep"),), name="inputs")]
        >>> [r.agree for r in scrub_many(m, hs, x, n_draws=1)]
        [1.0, 1.0]
    """
    check(n_draws >= 1, f"n_draws must be at least 1, got {n_draws}.")
    for h in hypotheses:
        check(h.site in model.hook_dict, f"Unknown activation site {h.site!r} for {type(model).__name__}.")
    clean_pred = predict(model, inputs, fwd_hooks, readout, batch_size, **forward_kwargs)
    if labels is not None:
        labels = labels.to(clean_pred.device)  # labels may come from the CPU, whatever the model's device
    clean_by_site: dict[str, Tensor] = {}
    results = []
    for i, hypothesis in enumerate(hypotheses):
        site = hypothesis.site
        if site not in clean_by_site:
            clean_by_site[site] = site_values(model, inputs, site, batch_size, fwd_hooks, **forward_kwargs)
        clean = clean_by_site[site]
        tag = hypothesis.name or f"#{i}"
        generator = torch.Generator().manual_seed(seed * 1000003 + zlib.crc32(tag.encode()))
        agree, acc, unmatched = [], [], []
        for _ in tqdm(range(n_draws), desc=f"scrub {hypothesis.name}".strip(), disable=quiet, leave=False):
            values, miss = scrubbed_values(hypothesis, clean, generator)
            pred = predict(model, inputs, fwd_hooks, readout, batch_size, {site: values}, **forward_kwargs)
            agree.append((pred == clean_pred).double().mean().item())
            if labels is not None:
                acc.append((pred == labels.reshape(pred.shape)).double().mean().item())
            unmatched.append(miss)
        m, ci = mean_ci(agree)
        result = ScrubResult(hypothesis.name, m, ci, agree_draws=agree, unmatched=sum(unmatched) / len(unmatched))
        if labels is not None:
            result.acc, result.acc_ci = mean_ci(acc)
            result.acc_draws = acc
            result.clean_acc = (clean_pred == labels.reshape(clean_pred.shape)).double().mean().item()
        results.append(result)
    return results

def grouped_hypothesis(
    site: str,
    same: dict[str, Sequence[int] | Tensor],
    key: PerInput = None,
    score: PerInput = None,
    tol: float = 0.0,
    free: dict[str, Sequence[int] | Tensor] | None = None,
    name: str = "",
) -> Hypothesis:
    """A hypothesis of named unit groups that each depend only on ``key`` (and ``score`` within ``tol``).

    Every non-empty group of ``same`` becomes a ``"same"`` :class:`Group` with the given
    ``key`` / ``score`` / ``tol``; every non-empty group of ``free`` a ``"free"`` one (e.g.
    dead units). Units are indices into the site's last axis. Causal scrubbing: Chan et al.
    2022, "Causal Scrubbing: a method for rigorously testing interpretability hypotheses".

    Raises :class:`~interplab.errors.InterplabError` when a unit is in two groups or
    ``same`` has a group but neither ``key`` nor ``score`` is given.

    Example:
        >>> import torch
        >>> h = grouped_hypothesis("fc1.hook_post", {"a": [0, 1], "b": []}, key=torch.tensor([0, 1]),
        ...                        free={"dead": [2]}, name="h")
        >>> [(g.name, g.rule, g.coords) for g in h.groups]
        [('a', 'same', (0, 1)), ('dead', 'free', (2,))]
    """
    gs = [Group([int(u) for u in units], "same", key=key, score=score, tol=tol, name=gname)
          for gname, units in same.items() if len(units)]
    gs += [Group([int(u) for u in units], "free", name=gname) for gname, units in (free or {}).items() if len(units)]
    return Hypothesis(site, groups=tuple(gs), name=name)


__all__ = ["Group", "Hypothesis", "grouped_hypothesis", "ScrubResult", "scrub", "scrub_many", "scrubbed_values", "mean_ci", "RULES"]
