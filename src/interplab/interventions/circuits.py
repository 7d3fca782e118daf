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

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import cache
from interplab.interventions.edges import Graph, run_edges, sender_outputs

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
    with torch.no_grad():
        current = distance(run_edges(model, graph, clean, corrupted, mask))
        n_forward = 1
        order = list(range(len(graph.receivers)))[::-1]
        bar = tqdm(total=graph.n_edges, disable=quiet, desc="ACDC")
        for r in order:
            senders = torch.nonzero(graph.allowed[r]).flatten().tolist()[::-1]
            node = graph.receiver_node(r)
            if node is not None and not bool(((mask[:, node] == 0) & graph.allowed[:, node]).any()):
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
    return ACDCResult(keep=(mask == 0) & graph.allowed.to(mask.device), distance=current, threshold=threshold,
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


def eap(model: torch.nn.Module, graph: Graph, clean: Tensor, corrupted: Tensor, metric: Metric) -> Tensor:
    """Edge attribution patching: first-order effect of patching each edge, ``[n_receivers, n_senders]``.

    ``score[r, s] = sum_{batch, pos} (corrupted_s - clean_s) . dmetric/d(input of r)`` at the
    clean input (zero where there is no edge); ``metric`` maps logits to a scalar (e.g. a mean
    logit difference; the KL divergence has zero gradient at the clean input). One forward and
    one backward pass.

    Example: see the module docstring.
    """
    mask = graph.mask(0.0).to(corrupted.device).requires_grad_(True)
    with torch.enable_grad():
        value = metric(run_edges(model, graph, clean, corrupted, mask))
        check(value.dim() == 0, "The metric must return a scalar.")
        (grad,) = torch.autograd.grad(value, mask)
    return grad.detach() * graph.allowed.to(grad.device)


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


__all__ = ["kl_divergence", "ACDCResult", "acdc", "acdc_sweep", "eap", "eap_ig", "top_edges", "faithfulness",
           "precision_recall", "node_edges"]
