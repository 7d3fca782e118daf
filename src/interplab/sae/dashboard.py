"""Feature dashboards: one HTML page per SAE feature, plus an index.

For language models, :func:`lm_feature_data` gathers, per feature, what the dashboards of
Anthropic's "Towards Monosemanticity" and SAELens / sae_vis show: the top-activating contexts
(tokens around the maximum, each with its activation), a histogram of the nonzero activations,
the density, and the logit weights (the top and bottom tokens of ``W_dec[i] @ W_U``, the
feature's direct effect on the logits, ignoring the final layer norm);
:func:`write_lm_dashboards` writes it as HTML pages, the tokens highlighted by activation, and
as ``dashboards.json``.

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

from interplab.devices import model_device
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
    ax.hist(a[a > 0].float().cpu().numpy(), bins=30)
    ax.set_xlabel("activation (nonzero only)")
    ax.set_ylabel("inputs")
    r.figure(fig, caption=f"{int((a > 0).sum())} of {len(a)} inputs activate the feature.")
    if len(order):
        effect = feature_effect(model, sae, inputs[order], site, feature)
        r.section("Effect on the output logits")
        idx = torch.cat([effect.argsort(descending=True)[:8], effect.argsort()[:8]]).unique(sorted=False)
        idx = idx[effect[idx].argsort(descending=True)]
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.bar([name(int(i)) for i in idx], effect[idx].float().cpu().numpy(), color=["tab:blue" if v > 0 else "tab:red" for v in effect[idx]])
        ax.set_ylabel("logit change")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        r.figure(fig, caption="Mean logit change on the top inputs caused by the feature (clean minus feature "
                              "removed); the largest increases and decreases.")
    return r


@torch.no_grad()
def feature_activations(sae: torch.nn.Module, model: torch.nn.Module, tokens: Tensor, features: Sequence[int] | None = None,
                        exclude_bos: bool = True, batch_size: int = 16) -> Tensor:
    """Activations ``[N, T, n_features]`` of ``features`` (default all) of ``sae`` at every token
    of ``tokens [N, T]`` (raw site activations through ``sae.features``; BOS set to 0 when
    ``exclude_bos``).

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=5, d_model=8, n_heads=2, d_mlp=16))
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=12, hook_name="blocks.0.hook_resid_post"))
        >>> feature_activations(sae, m, torch.randint(6, (3, 5)), [1, 4]).shape
        torch.Size([3, 5, 2])
    """
    from interplab.instrument import cache

    hook = sae.cfg.hook_name
    check(hook in model.hook_dict, f"The model has no site named {hook!r}, where the SAE reads.")
    idx = torch.arange(sae.cfg.d_sae) if features is None else torch.as_tensor(list(features), dtype=torch.long)
    check(len(idx) == 0 or (int(idx.min()) >= 0 and int(idx.max()) < sae.cfg.d_sae),
          f"features must lie in [0, {sae.cfg.d_sae}).")
    out = []
    device = model_device(model)
    for chunk in tokens.split(batch_size):
        act = cache(model, chunk.to(device), names=hook, stop=True)[1][hook]
        f = sae.features(act)[..., idx.to(act.device)]
        if exclude_bos:
            f[:, 0] = 0
        out.append(f.float().cpu())
    return torch.cat(out)


def _unembed(model: torch.nn.Module) -> Tensor:
    W_U = getattr(model, "W_U", None)
    check(isinstance(W_U, Tensor), f"{type(model).__name__} has no unembedding W_U; pass W_U explicitly.")
    return W_U


@torch.no_grad()
def lm_feature_data(sae: torch.nn.Module, model: torch.nn.Module, tokens: Tensor, features: Sequence[int],
                    token_str: Callable[[int], str] = str, W_U: Tensor | None = None, top: int = 10,
                    window: tuple[int, int] = (8, 3), n_logits: int = 10, bins: int = 30, exclude_bos: bool = True,
                    batch_size: int = 16) -> dict[int, dict[str, Any]]:
    """Dashboard data (JSON-ready) of each of ``features`` of ``sae`` on ``tokens [N, T]``.

    Per feature: ``density`` (fraction of tokens where it is active), ``max``, ``top_contexts``
    (the ``top`` highest (sequence, position) activations, each with the tokens from
    ``window[0]`` before to ``window[1]`` after and their activations), ``histogram``
    (``counts`` and bin ``edges`` of the nonzero activations) and ``logits`` (``top`` and
    ``bottom``: ``n_logits`` [token, weight] pairs of ``W_dec[i] @ W_U`` in the raw activation
    scale). ``token_str`` names a token id; ``W_U`` defaults to ``model.W_U``.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=5, d_model=8, n_heads=2, d_mlp=16), seed=0)
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=12, hook_name="blocks.0.hook_resid_post"), seed=0)
        >>> d = lm_feature_data(sae, m, torch.randint(6, (10, 5), generator=torch.Generator().manual_seed(0)), [3], top=2, n_logits=2)
        >>> sorted(d[3]), len(d[3]["logits"]["top"])
        (['density', 'feature', 'histogram', 'logits', 'max', 'top_contexts'], 2)
    """
    W_U = _unembed(model) if W_U is None else W_U
    acts = feature_activations(sae, model, tokens, features, exclude_bos, batch_size)  # [N, T, F]
    N, T, _ = acts.shape
    W_dec = sae.W_dec.detach() / sae.cfg.act_scale
    out: dict[int, dict[str, Any]] = {}
    for j, i in enumerate(features):
        a = acts[..., j]
        flat = a.flatten()
        order = flat.argsort(descending=True)[:top]
        order = order[flat[order] > 0]
        contexts = []
        for o in order.tolist():
            n, t = divmod(o, T)
            lo, hi = max(0, t - window[0]), min(T, t + window[1] + 1)
            contexts.append({"sequence": n, "position": t, "activation": a[n, t].item(),
                             "tokens": [token_str(int(x)) for x in tokens[n, lo:hi].tolist()],
                             "activations": a[n, lo:hi].tolist(), "max_index": t - lo})
        nonzero = flat[flat > 0]
        if len(nonzero):
            counts, edges = torch.histogram(nonzero, bins=bins)
        else:
            counts, edges = torch.zeros(0), torch.zeros(0)
        logit = (W_dec[int(i)] @ W_U.detach().to(W_dec)).float().cpu()  # an explicit W_U may be on the host
        k = min(n_logits, len(logit))
        up, down = logit.topk(k), (-logit).topk(k)
        out[int(i)] = {
            "feature": int(i), "density": (flat > 0).float().mean().item(), "max": flat.max().item(),
            "top_contexts": contexts,
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
            "logits": {"top": [[token_str(int(t)), v] for t, v in zip(up.indices.tolist(), up.values.tolist())],
                       "bottom": [[token_str(int(t)), -v] for t, v in zip(down.indices.tolist(), down.values.tolist())]},
        }
    return out


def highlight(tokens: Sequence[str], acts: Sequence[float], vmax: float, mark: int | None = None) -> str:
    """HTML of ``tokens``, each on a background whose strength is its activation over ``vmax``
    (escaped; the activation in the tooltip; ``mark`` underlines one token).

    Example:
        >>> highlight(["a", "<b>"], [0.0, 2.0], 2.0)
        "<span class='tok' style='background:rgba(255,140,0,0.00)' title='0'>a</span><span class='tok' style='background:rgba(255,140,0,1.00)' title='2'>&lt;b&gt;</span>"
    """
    parts = []
    for n, (tok, a) in enumerate(zip(tokens, acts)):
        alpha = 0.0 if vmax <= 0 else max(0.0, min(1.0, a / vmax))
        under = ";text-decoration:underline" if n == mark else ""
        parts.append(f"<span class='tok' style='background:rgba(255,140,0,{alpha:.2f}){under}' "
                     f"title='{a:.3g}'>{html.escape(tok)}</span>")
    return "".join(parts)


def lm_feature_report(data: dict[str, Any], hook_name: str = "") -> Report:
    """The dashboard :class:`~interplab.report.Report` of one feature from :func:`lm_feature_data`.

    Example:
        >>> d = {"feature": 0, "density": 0.1, "max": 2.0, "histogram": {"counts": [1.0], "edges": [0.0, 2.0]},
        ...      "top_contexts": [{"tokens": ["x", "y"], "activations": [0.0, 2.0], "max_index": 1, "activation": 2.0}],
        ...      "logits": {"top": [["y", 0.5]], "bottom": [["x", -0.5]]}}
        >>> "rgba(255,140,0,1.00)" in lm_feature_report(d).html()
        True
    """
    import matplotlib.pyplot as plt

    r = Report(f"Feature {data['feature']}", subtitle=f"SAE on {hook_name}" if hook_name else "")
    r.numbers({"density": data["density"], "max activation": data["max"]})
    r.section("Top-activating contexts")
    rows = [f"<div class='ctx'>{c['activation']:.3g}: {highlight(c['tokens'], c['activations'], data['max'], c['max_index'])}</div>"
            for c in data["top_contexts"]]
    r.text("".join(rows) if rows else "The feature is never active on these tokens.")
    counts, edges = data["histogram"]["counts"], data["histogram"]["edges"]
    if counts:
        r.section("Activation histogram")
        fig, ax = plt.subplots(figsize=(5, 2.6))
        ax.stairs(counts, edges, fill=True)
        ax.set_xlabel("activation (nonzero only)")
        ax.set_ylabel("tokens")
        r.figure(fig, caption=f"Density {data['density']:.3g}.")
    r.section("Logit weights (W_dec[i] @ W_U)")
    top, bottom = data["logits"]["top"], data["logits"]["bottom"]
    r.table(["top token", "weight", "bottom token", "weight"],
            [[t[0], t[1], b[0], b[1]] for t, b in zip(top, bottom)])
    return r


@torch.no_grad()
def write_lm_dashboards(sae: torch.nn.Module, model: torch.nn.Module, tokens: Tensor, features: Sequence[int],
                        out_dir: PathLike, token_str: Callable[[int], str] = str, **kwargs: Any) -> Path:
    """Write ``feature_<i>.html`` per feature, ``index.html`` and ``dashboards.json`` (the
    :func:`lm_feature_data` of every feature; ``kwargs`` go to it); returns the index path.

    Example:
        >>> import tempfile
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=5, d_model=8, n_heads=2, d_mlp=16), seed=0)
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=12, hook_name="blocks.0.hook_resid_post"), seed=0)
        >>> index = write_lm_dashboards(sae, m, torch.randint(6, (10, 5)), [0, 2], tempfile.mkdtemp())
        >>> sorted(p.name for p in index.parent.iterdir())
        ['dashboards.json', 'feature_0.html', 'feature_2.html', 'index.html']
    """
    from interplab.io import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = lm_feature_data(sae, model, tokens, features, token_str, **kwargs)
    atomic_write_json(out / "dashboards.json", {"hook_name": sae.cfg.hook_name, "features": list(data.values())})
    links = []
    for i, d in data.items():
        lm_feature_report(d, sae.cfg.hook_name).save(out / f"feature_{i}.html")
        links.append(f"<li><a href='feature_{i}.html'>feature {i}</a> (density {d['density']:.3g})</li>")
    index = Report("Feature dashboards", subtitle=f"SAE on {sae.cfg.hook_name}, {sae.cfg.d_sae} features")
    index.text(f"<ul>{''.join(links)}</ul>" if links else html.escape("No features selected."))
    return index.save(out / "index.html")


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
