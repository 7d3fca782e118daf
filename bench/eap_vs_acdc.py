"""Cost of edge attribution patching (EAP) against ACDC on one graph, at equal recall of a known circuit.

Trains an induction model (the ``atp`` study's task: repeated random subsequences with a
varying period and prefix) with more heads and layers than the study's, so that the edge graph
has several hundred edges; finds its previous-token and induction heads from their attention;
the known circuit is embed -> previous-token head (value), previous-token head -> induction
head (key, earlier layer only), embed -> induction head (query, value), induction head ->
logits. ACDC runs once at ``--threshold`` (fraction of the clean-minus-corrupted metric); its
recall of the known edges sets the bar; EAP's circuit is its top edges by score, as few as
reach that recall. Prints the CPU time of each (``time.process_time``: the work, not the
waiting on a shared machine), the recall of both and the ratio ACDC / EAP.

Run: ``python bench/eap_vs_acdc.py [--layers 3 --heads 8 --threshold 0.003]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from interplab.analysis.heads import induction_scores, previous_token_scores, repeated_tokens
from interplab.interventions.circuits import acdc, eap, precision_recall
from interplab.interventions.edges import Graph, sender_outputs
from interplab.models import Transformer
from interplab.tasks.sequences import induction_task
from interplab.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.003)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_values, length = 20, 8
    task = induction_task(n_values=n_values, length=10, n_examples=10000, seed=args.seed, min_length=3, max_prefix=5)
    cfg = dataclasses.replace(task.default_model_config(), n_layers=args.layers, n_heads=args.heads)
    model = Transformer(cfg, seed=args.seed)
    t = time.perf_counter()
    train(model, task, TrainConfig(epochs=3, lr=3e-3, weight_decay=0.01, batch_size=128, seed=args.seed,
                                   log_every=1), None, quiet=True)
    print(f"trained {args.layers} layers x {args.heads} heads in {time.perf_counter() - t:.0f} s, "
          f"test acc {task.evaluate(model)['test_acc']:.3f}")
    probe = repeated_tokens(n_values, length, 200, bos=n_values, seed=args.seed + 1)
    ind, prev = induction_scores(model, probe, length), previous_token_scores(model, probe)
    prev_heads = [(layer, h) for layer, h in torch.nonzero(prev > 0.4).tolist()]
    ind_heads = [(layer, h) for layer, h in torch.nonzero(ind > 0.4).tolist() if layer > 0]
    name = lambda lh: f"a{lh[0]}.h{lh[1]}"  # noqa: E731
    edges = [f"embed->{name(p)}.v" for p in prev_heads]
    edges += [f"{name(p)}->{name(i)}.k" for p in prev_heads for i in ind_heads if p[0] < i[0]]
    edges += [f"embed->{name(i)}.{x}" for i in ind_heads for x in ("q", "v")] + [f"{name(i)}->logits" for i in ind_heads]
    graph = Graph.from_model(model)
    known = graph.edge_set(edges)
    print(f"graph: {graph.n_edges} edges; previous-token heads {[name(p) for p in prev_heads]}, induction heads "
          f"{[name(i) for i in ind_heads]}; known circuit {int(known.sum())} edges")
    clean = repeated_tokens(n_values, length, args.prompts, bos=n_values, seed=args.seed + 2)
    corrupt = repeated_tokens(n_values, length, args.prompts, bos=n_values, seed=args.seed + 3)
    positions = torch.arange(length + 1, 2 * length)
    labels = clean[:, 2:length + 1]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, positions].log_softmax(-1).gather(-1, labels[..., None]).mean()

    corr = sender_outputs(model, graph, corrupt)
    with torch.no_grad():
        total = abs(float(metric(model(clean))) - float(metric(model(corrupt))))
    eap(model, graph, clean, corr, metric)  # warm-up
    t = time.process_time()
    found = acdc(model, graph, clean, corr, args.threshold * total, metric, quiet=True)
    t_acdc = time.process_time() - t
    _, r_acdc = precision_recall(found.keep, known)
    t = time.process_time()
    scores = eap(model, graph, clean, corr, metric)
    order = scores.abs().flatten().argsort(descending=True)
    keep = torch.zeros(graph.allowed.numel(), dtype=torch.bool)
    n_known, hits, k = int(known.sum()), 0, 0
    known_flat = known.flatten()
    while hits < r_acdc * n_known - 1e-9 and k < graph.n_edges:  # the fewest top edges that reach ACDC's recall
        keep[order[k]] = True
        hits += int(known_flat[order[k]])
        k += 1
    t_eap = time.process_time() - t
    p_eap, r_eap = precision_recall(keep.view_as(known), known)
    p_acdc = precision_recall(found.keep, known)[0]
    print(f"ACDC: {t_acdc:.2f} s CPU, {found.n_forward} forward passes, {found.n_edges} edges, recall {r_acdc:.3f}, "
          f"precision {p_acdc:.3f}")
    print(f"EAP:  {t_eap:.3f} s CPU (one forward and backward pass), top {k} edges, recall {r_eap:.3f}, "
          f"precision {p_eap:.3f}")
    print(f"ratio ACDC / EAP CPU time at equal recall: {t_acdc / t_eap:.0f}x")


if __name__ == "__main__":
    main()
