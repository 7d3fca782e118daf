"""Feature dashboards: one HTML page per SAE feature, plus an index.

Each page shows the feature's density, its top-activating inputs (described by a callable
you pass, e.g. ``"12 + 40 ="``), a histogram of its nonzero activations, and its effect on the
output logits: the mean change of the logits on its top-activating inputs when the feature's
contribution ``f_i * W_dec[i]`` is removed from the site (an ablation, so it includes every
path from the site to the output, not only the direct one).

Example:
    >>> import tempfile, torch
    >>> from interplab.models import MLP, MLPConfig
    >>> from interplab.instrument import Site
    >>> from interplab.sae.model import SAE, SAEConfig
    >>> model = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=3), seed=0)
    >>> sae = SAE(SAEConfig(d_in=8, d_sae=16, hook_name="layers.0.hook_post"))
    >>> index = write_dashboards(sae, model, torch.randn(50, 4), Site("layers.0.hook_post"), [0, 3],
    ...                          tempfile.mkdtemp())
    >>> sorted(p.name for p in index.parent.iterdir())
    ['feature_0.html', 'feature_3.html', 'index.html']
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interplab.errors import check
from interplab.instrument import Site
from interplab.io import PathLike
from interplab.report import Report
from interplab.sae.buffer import collect


def _last(out: Tensor) -> Tensor:
    return out[:, -1] if out.dim() == 3 else out.reshape(out.shape[0], -1)


@torch.no_grad()
def feature_effect(model: torch.nn.Module, sae: torch.nn.Module, inputs: Tensor, site: Site, feature: int) -> Tensor:
    """Mean change of the output logits (last position) when ``feature`` is removed at ``site``.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=3))
        >>> feature_effect(m, SAE(SAEConfig(d_in=8, d_sae=4)), torch.randn(5, 4), Site("layers.0.hook_post"), 0).shape
        torch.Size([3])
    """
    def remove(act: Tensor, hook: Any) -> Tensor:
        rows = site.read(act)
        f = sae.encode(rows)[:, feature]
        return site.write(act, rows - f[:, None] * sae.W_dec[feature])

    clean = _last(model(inputs))
    ablated = _last(model.run_with_hooks(inputs, fwd_hooks=[(site.name, remove)]))
    return (clean - ablated).mean(0)


@torch.no_grad()
def feature_dashboard(
    sae: torch.nn.Module,
    model: torch.nn.Module,
    inputs: Tensor,
    site: Site,
    feature: int,
    acts: Tensor | None = None,
    describe: Callable[[Tensor], str] | None = None,
    logit_names: Sequence[str] | None = None,
    top: int = 12,
) -> Report:
    """The dashboard :class:`~interplab.report.Report` of one feature (save it with ``.save``).

    ``acts``: the feature activations ``[N, d_sae]`` on ``inputs`` if already computed (the
    site must read one row per input). ``describe`` turns one input into text.
    """
    import matplotlib.pyplot as plt

    check(0 <= feature < sae.cfg.d_sae, f"feature must be in [0, {sae.cfg.d_sae}), got {feature}.")
    if acts is None:
        acts = sae.encode(collect(model, site, inputs))
    check(len(acts) == len(inputs), "The site must give one row per input for a dashboard (set a position).")
    describe = describe or (lambda x: " ".join(str(v) for v in x.flatten().tolist()[:16]))
    a = acts[:, feature]
    density = (a > 0).float().mean().item()
    r = Report(f"Feature {feature}", subtitle=f"SAE on {site.name}" + ("" if site.position is None else f" at position {site.position}"))
    r.numbers({"density": density, "max activation": a.max().item(), "mean when active": a[a > 0].mean().item() if density else 0.0})
    order = a.argsort(descending=True)[:top]
    order = order[a[order] > 0]
    preds = _last(model(inputs[order])).argmax(-1) if len(order) else torch.zeros(0, dtype=torch.long, device=a.device)
    r.section("Top-activating inputs")
    name = (lambda i: logit_names[i]) if logit_names is not None else str
    r.table(["rank", "input", "activation", "model output"],
            [[i + 1, describe(inputs[j]), a[j].item(), name(int(p))] for i, (j, p) in enumerate(zip(order.tolist(), preds.tolist()))])
    r.section("Activation histogram")
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.hist(a[a > 0].numpy(), bins=30)
    ax.set_xlabel("activation (nonzero only)")
    ax.set_ylabel("inputs")
    r.figure(fig, caption=f"{int((a > 0).sum())} of {len(a)} inputs activate the feature.")
    if len(order):
        effect = feature_effect(model, sae, inputs[order], site, feature)
        r.section("Effect on the output logits")
        idx = torch.cat([effect.argsort(descending=True)[:8], effect.argsort()[:8]]).unique(sorted=False)
        idx = idx[effect[idx].argsort(descending=True)]
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.bar([name(int(i)) for i in idx], effect[idx].numpy(), color=["tab:blue" if v > 0 else "tab:red" for v in effect[idx]])
        ax.set_ylabel("logit change")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        r.figure(fig, caption="Mean logit change on the top inputs caused by the feature (clean minus feature "
                              "removed); the largest increases and decreases.")
    return r


@torch.no_grad()
def write_dashboards(
    sae: torch.nn.Module,
    model: torch.nn.Module,
    inputs: Tensor,
    site: Site,
    features: Sequence[int],
    out_dir: PathLike,
    describe: Callable[[Tensor], str] | None = None,
    logit_names: Sequence[str] | None = None,
    top: int = 12,
) -> Path:
    """Write ``feature_<i>.html`` for each feature and an ``index.html``; returns the index path.

    Example: see the module docstring.
    """
    out = Path(out_dir)
    acts = sae.encode(collect(model, site, inputs))
    density = (acts > 0).float().mean(0)
    links = []
    for i in features:
        feature_dashboard(sae, model, inputs, site, int(i), acts, describe, logit_names, top).save(out / f"feature_{i}.html")
        links.append(f"<li><a href='feature_{i}.html'>feature {i}</a> (density {density[i].item():.3g})</li>")
    index = Report("Feature dashboards", subtitle=f"SAE on {site.name}, {sae.cfg.d_sae} features")
    index.text(f"<ul>{''.join(links)}</ul>" if links else html.escape("No features selected."))
    return index.save(out / "index.html")
