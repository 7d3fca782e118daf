"""Circuit discovery on the edge graph: ACDC, edge attribution patching (EAP) and EAP-IG.

- :func:`acdc`: automated circuit discovery (Conmy et al. 2023, "Towards Automated Circuit
  Discovery for Mechanistic Interpretability"). Walk the receivers from the logits backwards;
  for each incoming edge, patch it (corrupted or mean value) and keep it patched if the
  distance to the full model (KL divergence of the output distribution, or the change of a
  task metric) grows by less than ``threshold``. What stays unpatched is the circuit.
  :func:`acdc_sweep` repeats it over several thresholds.
- :func:`eap`: edge attribution patching (Syed, Rager and Conmy 2023, "Attribution Patching
  Outperforms Automated Circuit Discovery"): every edge's effect to first order,
  ``(corrupted_s - clean_s) . dmetric/d(input of r)``, from one forward and one backward pass.
  It is the gradient of the metric with respect to the edge mask of
  :func:`~interplab.interventions.edges.run_edges` at zero.
- :func:`eap_ig`: EAP with integrated gradients (Hanna, Pezzelle and Belinkov 2024, "Have
  Faith in Faithfulness"): the gradient is averaged over inputs whose token embeddings
  interpolate from the corrupted to the clean ones.
- :func:`faithfulness`: the metric of the circuit alone (every other edge patched),
  normalised so that the full model scores 1 and the corrupted run 0.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> from interplab.interventions.edges import Graph, sender_outputs
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
    >>> g = Graph.from_model(m)
    >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 5, 3]])
    >>> corr = sender_outputs(m, g, corrupt)
    >>> found = acdc(m, g, clean, corr, threshold=0.0, quiet=True)
    >>> found.keep.shape, found.n_forward <= g.n_edges + 1
    (torch.Size([13, 5]), True)
    >>> scores = eap(m, g, clean, corr, lambda logits: logits[:, -1, 3].mean())
    >>> scores.shape
    torch.Size([13, 5])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import cache
from interplab.interventions.edges import INPUTS, Graph, run_edges, sender_outputs

Metric = Callable[[Tensor], Tensor]


def kl_divergence(logits: Tensor, reference: Tensor, positions: Sequence[int] | Tensor | None = None) -> Tensor:
    """Mean ``KL(reference || logits)`` of the output distributions, over batch and ``positions``.

    ``logits``, ``reference``: ``[batch, pos, vocab]``; ``positions``: readout positions (all if None).

    Example:
        >>> x = torch.randn(2, 3, 5)
        >>> float(kl_divergence(x, x)), bool(kl_divergence(x, x.flip(-1)) > 0)
        (0.0, True)
    """
    if positions is not None:
        logits, reference = logits[:, positions], reference[:, positions]
    ref = reference.log_softmax(-1)
    return (ref.exp() * (ref - logits.log_softmax(-1))).sum(-1).mean()


@dataclass
class ACDCResult:
    """What :func:`acdc` found: ``keep`` (bool ``[n_receivers, n_senders]``, the circuit's edges),
    the final ``distance`` to the full model, the ``threshold`` and the number of forward passes."""

    keep: Tensor
    distance: float
    threshold: float
    n_forward: int

    @property
    def n_edges(self) -> int:
        """Edges in the circuit."""
        return int(self.keep.sum())


def _distance_fn(model: torch.nn.Module, graph: Graph, clean: Tensor, metric: Metric | None,
                 positions: Sequence[int] | Tensor | None) -> Callable[[Tensor], float]:
    with torch.no_grad():
        full = model(clean)
    if metric is None:
        return lambda logits: float(kl_divergence(logits, full, positions))
    target = float(metric(full))
    return lambda logits: abs(float(metric(logits)) - target)


def acdc(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted: Tensor, threshold: float,
         metric: Metric | None = None, positions: Sequence[int] | Tensor | None = None, quiet: bool = False
         ) -> ACDCResult:
    """ACDC: prune edges whose patching moves the model's output by less than ``threshold``.

    ``clean``: tokens ``[batch, pos]``; ``corrupted``: the senders' corrupted (or mean) outputs
    ``[batch or 1, pos, n_senders, d_model]`` (:func:`~interplab.interventions.edges.sender_outputs`).
    The distance to the full model is the KL divergence of the output at ``positions`` (all if
    None) or, with ``metric`` (logits -> scalar), ``|metric(patched) - metric(full)|``.
    Receivers are visited from the logits backwards, each one's senders latest first; an edge is
    removed (stays patched) when the distance grows by less than ``threshold``. A node whose
    outputs are all patched no longer matters, so its input edges are removed without a test.
    One forward pass per tested edge.

    Example: see the module docstring.
    """
    check(threshold >= 0, f"threshold must be non-negative, got {threshold}.")
    distance = _distance_fn(model, graph, clean, metric, positions)
    mask = graph.mask(0.0).to(corrupted.device)
    allowed = graph.allowed.to(corrupted.device)
    with torch.no_grad():
        current = distance(run_edges(model, graph, clean, corrupted, mask))
        n_forward = 1
        order = list(range(len(graph.receivers)))[::-1]
        bar = tqdm(total=graph.n_edges, disable=quiet, desc="ACDC")
        for r in order:
            senders = torch.nonzero(graph.allowed[r]).flatten().tolist()[::-1]
            node = graph.receiver_node(r)
            if node is not None and not bool(((mask[:, node] == 0) & allowed[:, node]).any()):
                mask[r, senders] = 1.0  # the node's output is patched everywhere: its inputs do not matter
                bar.update(len(senders))
                continue
            for s in senders:
                mask[r, s] = 1.0
                new = distance(run_edges(model, graph, clean, corrupted, mask))
                n_forward += 1
                if new - current < threshold:
                    current = new
                else:
                    mask[r, s] = 0.0
                bar.update(1)
        bar.close()
    return ACDCResult(keep=(mask == 0) & allowed, distance=current, threshold=threshold,
                      n_forward=n_forward)


def acdc_sweep(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted: Tensor, thresholds: Sequence[float],
               metric: Metric | None = None, positions: Sequence[int] | Tensor | None = None, quiet: bool = False
               ) -> list[ACDCResult]:
    """:func:`acdc` at each threshold (a fresh walk each time).

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.interventions.edges import Graph, sender_outputs
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2, d_mlp=None))
        >>> g = Graph.from_model(m)
        >>> x, y = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
        >>> sizes = [r.n_edges for r in acdc_sweep(m, g, x, sender_outputs(m, g, y), [0.0, 1e9], quiet=True)]
        >>> sizes[0] >= sizes[1] == 0
        True
    """
    return [acdc(model, graph, clean, corrupted, t, metric, positions, quiet) for t in thresholds]


def eap(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted: Tensor, metric: Metric,
        exact_attention: bool = False) -> Tensor:
    """Edge attribution patching: first-order effect of patching each edge, ``[n_receivers, n_senders]``.

    ``score[r, s] = sum_{batch, pos} (corrupted_s - clean_s) . dmetric/d(input of r)`` at the
    clean input (zero where there is no edge); ``metric`` maps logits to a scalar (e.g. a mean
    logit difference; the KL divergence has zero gradient at the clean input). One forward and
    one backward pass.

    ``exact_attention``: AtP*'s fix for saturated attention (Kramár et al. 2024) applied to
    edges into queries and keys: the receiving head's query (or key) is recomputed from the
    patched input, its attention pattern exactly, and only the step from the pattern onwards is
    linearised: ``(pattern_patched - pattern) . dmetric/dpattern``.

    Example: see the module docstring.
    """
    mask = graph.mask(0.0).to(corrupted.device).requires_grad_(True)
    saved: dict[str, Tensor] = {}

    def save(act: Tensor, hook: Any) -> None:
        saved[hook.name] = act

    hooks = []
    if exact_attention:
        for layer in range(graph.n_layers):
            hooks += [(f"blocks.{layer}.hook_resid_pre", save)]
            hooks += [(f"blocks.{layer}.attn.hook_{x}", save) for x in ("q", "k", "pattern")]
    with torch.enable_grad():
        logits, senders = run_edges(model, graph, clean, corrupted, mask, return_senders=True, fwd_hooks=hooks)
        value = metric(logits)
        check(value.dim() == 0, "The metric must return a scalar.")
        patterns = [saved[f"blocks.{layer}.attn.hook_pattern"] for layer in range(graph.n_layers)] if hooks else []
        grads = torch.autograd.grad(value, [mask] + patterns)
    score = grads[0].detach() * graph.allowed.to(grads[0].device)
    if exact_attention:
        with torch.no_grad():
            for layer in range(graph.n_layers):
                _exact_qk(model, graph, layer, saved, grads[1 + layer], corrupted - senders.detach(), score)
    return score


def _exact_qk(model: torch.nn.Module, graph: Graph, layer: int, saved: dict[str, Tensor], g_pattern: Tensor,
              delta: Tensor, score: Tensor) -> None:
    """Overwrite the scores of edges into layer ``layer``'s queries and keys with AtP*'s estimate.

    ``delta``: corrupted minus clean sender outputs ``[batch or 1, pos, n_senders, d_model]``.
    """
    attn = model.blocks[layer].attn
    p = f"blocks.{layer}.attn."
    resid, pattern = saved[f"blocks.{layer}.hook_resid_pre"], saved[p + "hook_pattern"]  # [b, n, d], [b, H, q, k]
    q_all, k_all = saved[p + "hook_q"].detach(), saved[p + "hook_k"].detach()  # [b, n, H, dh]
    resid, pattern = resid.detach(), pattern.detach()
    n_send = int(graph.allowed[graph.receiver_index(f"a{layer}.h0.q")].sum())
    x = model.blocks[layer].ln1(resid[:, :, None, :] + delta[:, :, :n_send])  # [b, n, S, d]: one patched edge each
    scale = getattr(attn, "scale", None) or 1.0 / float(q_all.shape[-1]) ** 0.5
    n = resid.shape[1]
    future = torch.ones(n, n, dtype=torch.bool, device=resid.device).triu(1)
    for kind in ("q", "k"):
        W, b = getattr(attn, f"W_{kind.upper()}"), getattr(attn, f"b_{kind.upper()}", None)
        new = torch.einsum("bnsd,hde->bnshe", x, W)  # [b, n, S, H, dh]
        if b is not None:
            new = new + b
        for h in range(graph.n_heads):
            other = k_all[:, :, h] if kind == "q" else q_all[:, :, h]  # [b, n, dh]
            if kind == "q":
                s_new = torch.einsum("bqse,bke->bsqk", new[:, :, :, h], other) * scale
            else:
                s_new = torch.einsum("bqe,bkse->bsqk", other, new[:, :, :, h]) * scale
            p_new = s_new.masked_fill(future, float("-inf")).softmax(-1)  # [b, S, q, k]
            est = ((p_new - pattern[:, h, None]) * g_pattern[:, h, None]).sum((0, 2, 3))  # [S]
            score[graph.receiver_index(f"a{layer}.h{h}.{kind}"), :n_send] = est


def eap_ig(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted_tokens: Tensor, metric: Metric,
           steps: int = 10) -> Tensor:
    """EAP with integrated gradients: ``(corrupted_s - clean_s) . mean_k dmetric/d(input of r)``.

    The gradients are taken at ``steps`` inputs whose token embeddings (``hook_embed``) are
    ``corrupted + k/steps (clean - corrupted)``, ``k = 1..steps`` (positions unchanged), as in
    Hanna et al. (2024). ``corrupted_tokens``: ``[batch, pos]`` like ``clean``. Returns
    ``[n_receivers, n_senders]``; costs ``steps`` forward and backward passes.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.interventions.edges import Graph, sender_outputs
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2, d_mlp=None))
        >>> g = Graph.from_model(m)
        >>> x, y = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
        >>> metric = lambda logits: logits[:, -1, 2].mean()
        >>> one = eap_ig(m, g, x, y, metric, steps=1)    # one step at the clean input is EAP
        >>> bool(torch.allclose(one, eap(m, g, x, sender_outputs(m, g, y), metric), atol=1e-5))
        True
    """
    check(steps >= 1, f"steps must be at least 1, got {steps}.")
    check(clean.shape == corrupted_tokens.shape, "clean and corrupted tokens must have the same shape.")
    with torch.no_grad():
        _, acts_clean = cache(model, clean, names=["hook_embed"])
        _, acts_corr = cache(model, corrupted_tokens, names=["hook_embed"])
    e_clean, e_corr = acts_clean["hook_embed"], acts_corr["hook_embed"]
    clean_out = sender_outputs(model, graph, clean)
    corr_out = sender_outputs(model, graph, corrupted_tokens)
    total = torch.zeros(graph.allowed.shape, device=clean_out.device)
    for k in range(1, steps + 1):
        embed = e_corr + (k / steps) * (e_clean - e_corr)
        mask = graph.mask(0.0).to(clean_out.device).requires_grad_(True)
        with torch.enable_grad():
            value = metric(run_edges(model, graph, clean, corr_out, mask, reference=clean_out, embed=embed))
            (grad,) = torch.autograd.grad(value, mask)
        total += grad.detach()
    return total / steps * graph.allowed.to(total.device)


def patch_curve(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted: Tensor, edges: Tensor,
                metric: Metric, alphas: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> Tensor:
    """The metric as the ``edges`` are patched by a growing fraction: ``metric(alpha) - metric(0)``, ``[len(alphas)]``.

    ``edges``: bool ``[n_receivers, n_senders]``; each receiver sees ``alpha (corrupted_s -
    clean_s)`` added for each of its senders there (``alpha = 1``: the edges patched). EAP's
    score of a single edge is this curve's slope at 0, so the curve shows where the
    first-order estimate fails: a curve flat at 0 and steep towards 1 (e.g. through a
    saturated attention softmax) is an edge EAP scores near zero although patching it matters.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.interventions.edges import Graph, sender_outputs
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2, d_mlp=None,
        ...                                   normalization="none", bias=False))
        >>> g = Graph.from_model(m)
        >>> x, y = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
        >>> corr, metric = sender_outputs(m, g, y), (lambda logits: logits[:, -1, 2].mean())
        >>> edge = g.edge_set(["a0.h1->logits"])   # the logits are linear in it: the curve is a line
        >>> c = patch_curve(m, g, x, corr, edge, metric, [0.5, 1.0])
        >>> bool(torch.isclose(c[1], 2 * c[0], atol=1e-5))
        True
    """
    check(bool((edges.bool() & graph.allowed.to(edges.device)).any()), "patch_curve needs at least one edge.")
    mask = (edges.bool() & graph.allowed.to(edges.device)).float().to(corrupted.device)
    with torch.no_grad():
        base = metric(run_edges(model, graph, clean, corrupted, graph.mask(0.0)))
        out = [metric(run_edges(model, graph, clean, corrupted, a * mask)) - base for a in alphas]
    return torch.stack(out).detach()


def score_pr_curve(scores: Tensor, known: Tensor, graph: Graph) -> tuple[Tensor, Tensor, Tensor]:
    """Precision and recall of the circuits ``|scores| >= t`` over every threshold ``t``, against ``known``.

    Returns ``(precision, recall, thresholds)`` as scikit-learn's ``precision_recall_curve``
    gives them (over the graph's edges only; the last point is precision 1, recall 0, without a
    threshold). ``scores``: any per-edge score ``[n_receivers, n_senders]`` (EAP, EAP-IG,
    single-edge effects); ``known``: bool mask of the known circuit.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> g = Graph.from_model(Transformer(TransformerConfig(d_vocab=4, n_ctx=3, d_model=8, n_layers=1,
        ...                                                    n_heads=1, d_mlp=None)))
        >>> s = g.mask(0.0); s[g.receiver_index("logits"), 1] = -2.0; s[g.receiver_index("a0.h0.v"), 0] = 1.0
        >>> p, r, t = score_pr_curve(s, g.edge_set(["a0.h0->logits"]), g)
        >>> [round(float(x), 2) for x in p], [round(float(x), 2) for x in r]
        ([0.2, 0.5, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0])
    """
    from sklearn.metrics import precision_recall_curve

    allowed = graph.allowed.cpu()
    y, score = known.bool().cpu()[allowed].numpy(), scores.detach().abs().float().cpu()[allowed].numpy()
    check(bool(y.any()), "The known circuit has no edge in the graph.")
    p, r, t = precision_recall_curve(y, score)
    return torch.tensor(p.copy()), torch.tensor(r.copy()), torch.tensor(t.copy())


def top_edges(scores: Tensor, graph: Graph, threshold: float) -> Tensor:
    """The circuit of edges whose score magnitude is at least ``threshold``: bool ``[n_receivers, n_senders]``.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> g = Graph.from_model(Transformer(TransformerConfig(d_vocab=4, n_ctx=3, d_model=8, n_layers=1,
        ...                                                    n_heads=1, d_mlp=None)))
        >>> s = g.mask(0.01); s[g.receiver_index("logits"), 1] = -2.0
        >>> g.edges(top_edges(s, g, 0.5))
        ['a0.h0->logits']
    """
    return (scores.abs() >= threshold) & graph.allowed.to(scores.device)


def faithfulness(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted: Tensor, keep: Tensor,
                 metric: Metric) -> float:
    """The metric of the circuit alone, ``(m(circuit) - m(corrupted)) / (m(full) - m(corrupted))``.

    ``keep``: the circuit's edges (bool); every other edge is patched to ``corrupted`` sender
    outputs. 1 means the circuit alone recovers the full model's metric, 0 that it does no
    better than the corrupted run.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.interventions.edges import Graph, sender_outputs
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2, d_mlp=None))
        >>> g = Graph.from_model(m)
        >>> x, y = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5, 3]])
        >>> corr, metric = sender_outputs(m, g, y), (lambda logits: logits[:, -1, 2].mean())
        >>> round(faithfulness(m, g, x, corr, g.allowed, metric), 4), round(faithfulness(m, g, x, corr, ~g.allowed, metric), 4)
        (1.0, 0.0)
    """
    with torch.no_grad():
        full = float(metric(run_edges(model, graph, clean, corrupted, graph.mask(0.0))))
        none = float(metric(run_edges(model, graph, clean, corrupted, graph.mask(1.0))))
        circuit = float(metric(run_edges(model, graph, clean, corrupted, (~keep.bool()).float())))
    check(abs(full - none) > 1e-12, "The clean and corrupted runs give the same metric; faithfulness is undefined.")
    return (circuit - none) / (full - none)


def precision_recall(found: Tensor, known: Tensor) -> tuple[float, float]:
    """Precision and recall of the edges ``found`` against the ``known`` circuit (both bool masks).

    Example:
        >>> f = torch.tensor([[True, True], [False, False]])
        >>> precision_recall(f, torch.tensor([[True, False], [True, False]]))
        (0.5, 0.5)
    """
    found, known = found.bool().cpu(), known.bool().cpu()
    tp = int((found & known).sum())
    n_found, n_known = int(found.sum()), int(known.sum())
    return (tp / n_found if n_found else 0.0), (tp / n_known if n_known else 1.0)


def node_edges(graph: Graph, senders: Sequence[str], receivers: Sequence[str]) -> Tensor:
    """The edges between chosen nodes (e.g. the components a node-level method found): bool mask.

    ``embed`` and ``logits`` need not be listed: they are always part of a circuit.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> g = Graph.from_model(Transformer(TransformerConfig(d_vocab=4, n_ctx=3, d_model=8, n_layers=2,
        ...                                                    n_heads=1, d_mlp=None)))
        >>> g.edges(node_edges(g, ["a0.h0"], ["a1.h0.k"]))
        ['embed->a1.h0.k', 'a0.h0->a1.h0.k', 'embed->logits', 'a0.h0->logits']
    """
    s = torch.tensor([n in set(senders) | {"embed"} for n in graph.senders])
    r = torch.tensor([n in set(receivers) | {"logits"} for n in graph.receivers])
    return r[:, None] & s[None, :] & graph.allowed


def component_edges(graph: Graph, estimates: dict[str, Tensor], threshold: float) -> Tensor:
    """The edges between the components a node-level method (AtP, AtP*, activation patching) found.

    ``estimates``: grids by kind as :func:`~interplab.interventions.attribution.atp_star` returns
    them without ``per_position``: ``z``, ``q``, ``k``, ``v`` ``[layer, head]`` and optionally
    ``mlp_out`` ``[layer]``. A component is found when its magnitude is at least ``threshold``
    times the largest over all kinds; a head sends when its ``z`` is found, receives on its
    ``q``/``k``/``v`` input when that is found, and an MLP both sends and receives when its
    ``mlp_out`` is found. Returns the bool mask of :func:`node_edges`.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> g = Graph.from_model(Transformer(TransformerConfig(d_vocab=4, n_ctx=3, d_model=8, n_layers=2,
        ...                                                    n_heads=1, d_mlp=None)))
        >>> est = {"z": torch.tensor([[1.0], [0.05]]), "q": torch.zeros(2, 1), "k": torch.tensor([[0.0], [0.5]]),
        ...        "v": torch.zeros(2, 1)}
        >>> g.edges(component_edges(g, est, 0.1))
        ['embed->a1.h0.k', 'a0.h0->a1.h0.k', 'embed->logits', 'a0.h0->logits']
    """
    check(all(k in estimates for k in ("z", "q", "k", "v")), "estimates need the kinds z, q, k and v.")
    level = threshold * max(float(v.abs().max()) for v in estimates.values())
    senders, receivers = [], []
    for layer, head in torch.nonzero(estimates["z"].abs() >= level).tolist():
        senders.append(f"a{layer}.h{head}")
    for kind in INPUTS:
        for layer, head in torch.nonzero(estimates[kind].abs() >= level).tolist():
            receivers.append(f"a{layer}.h{head}.{kind}")
    if "mlp_out" in estimates:
        for (layer,) in torch.nonzero(estimates["mlp_out"].abs() >= level).tolist():
            senders.append(f"m{layer}")
            receivers.append(f"m{layer}")
    return node_edges(graph, senders, receivers)


def draw_circuit(graph: Graph, keep: Tensor, weights: Tensor | None = None, title: str = "") -> Figure:
    """A drawing of a circuit: nodes by layer (left to right), edges weighted by ``|weights|``.

    Heads of a layer stand in a column, the MLP half a layer later, the embedding on the left
    and the logits on the right. An edge goes from its sender to the node it feeds, coloured
    by the input it enters (query, key, value, MLP, logits); its width and opacity grow with
    the square root of its weight's magnitude (uniform without ``weights``), so a few hundred
    edges stay legible.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> g = Graph.from_model(Transformer(TransformerConfig(d_vocab=4, n_ctx=3, d_model=8, n_layers=2,
        ...                                                    n_heads=2, d_mlp=None)))
        >>> fig = draw_circuit(g, g.allowed, title="all edges")
        >>> len(fig.axes[0].lines) > 0
        True
    """
    import matplotlib.pyplot as plt

    keep = keep.bool().cpu() & graph.allowed
    w = torch.ones(keep.shape) if weights is None else weights.detach().abs().float().cpu()
    w_max = float(w[keep].max()) if bool(keep.any()) else 1.0
    pos: dict[str, tuple[float, float]] = {}
    for name in graph.senders + ("logits",):
        layer = graph.layer_of(name)
        if name[0] == "a":
            y = int(name.split(".h")[1]) - (graph.n_heads - 1) / 2
        else:
            y = 0.0
        pos[name] = (layer, y)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * (graph.n_layers + 1), 1.5 + 0.55 * graph.n_heads))
    colors = {"q": "tab:blue", "k": "tab:orange", "v": "tab:green", "m": "tab:purple", "logits": "tab:red"}
    for r, s in torch.nonzero(keep).tolist():
        receiver = graph.receivers[r]
        kind = receiver.rsplit(".", 1)[1] if receiver[0] == "a" else ("m" if receiver[0] == "m" else "logits")
        target = receiver.rsplit(".", 1)[0] if receiver[0] == "a" else receiver
        (x0, y0), (x1, y1) = pos[graph.senders[s]], pos[target]
        share = (float(w[r, s]) / w_max) ** 0.5 if w_max > 0 else 1.0  # square root: weak edges stay visible
        offset = {"q": -0.12, "k": 0.0, "v": 0.12}.get(kind, 0.0)
        bend = 0.25 if abs(x1 - x0) > 1.01 or x1 == x0 else 0.0
        xs = [x0, (x0 + x1) / 2, x1 - 0.08]
        ys = [y0, (y0 + y1) / 2 + bend, y1 + offset]
        ax.plot(xs, ys, color=colors[kind], lw=0.5 + 3.0 * share, alpha=0.3 + 0.65 * share, solid_capstyle="round")
    used = {graph.senders[s] for s in torch.nonzero(keep)[:, 1].tolist()}
    used |= {graph.receivers[r].rsplit(".", 1)[0] if graph.receivers[r][0] == "a" else graph.receivers[r]
             for r in torch.nonzero(keep)[:, 0].tolist()}
    for name, (x, y) in pos.items():
        ax.scatter([x], [y], s=260, color="black" if name in used else "lightgrey", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 11), ha="center", fontsize=8)
    for kind, color in colors.items():
        ax.plot([], [], color=color, label={"m": "MLP in"}.get(kind, kind))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xticks([-1] + list(range(graph.n_layers)) + [graph.n_layers],
                  ["embed"] + [f"layer {i}" for i in range(graph.n_layers)] + ["logits"])
    ax.set_yticks([])
    ax.set_ylim(-(graph.n_heads + 1) / 2, (graph.n_heads + 1) / 2)
    ax.set_title(title or f"{int(keep.sum())} edges")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


__all__ = ["kl_divergence", "ACDCResult", "acdc", "acdc_sweep", "eap", "eap_ig", "patch_curve", "score_pr_curve",
           "top_edges", "faithfulness",
           "precision_recall", "node_edges", "component_edges", "draw_circuit"]
