"""The ``pairs`` challenge family: EIS VII challenge 2 with a new secret rule each seed.

A challenge labels every pair ``(A, B)``, A, B in ``0..p-1`` (p = 113), with a hidden rule of
the published kind: an AND or an OR of two thresholded *filters* ``g(A) + h(B)``, each drawn
from a random family (half-planes, curved regions, periodic bands and their mixtures; see
:func:`interplab.tasks.pair_labels.random_pair_rule`). The challenge 2 transformer is trained
on half of the pairs with the published settings; the challenge is the trained network.

- :func:`make` draws the rule from the seed, trains the network and writes ``out/public/``
  (``network/`` with ``config.json`` and ``model.safetensors``, ``challenge.json``) and the
  sealed ``out/answer.json`` (the rule's parameters; :func:`pair_rule_table` evaluates it).
- :func:`solve` reads only ``public/`` and recovers the rule with the eis-transformer pipeline:
  attention fixed to its mean, an AND (and an OR) of two thresholded directions fitted on the
  post-attention residual ``resid_mid``, effective embeddings projected on them (filter images
  ``g(A) + h(B)``), thresholds refitted on the network's labels; a second candidate takes the
  additive part of the full model's readouts instead. The candidate agreeing best with the
  network is written to ``solution.json`` as per-token filter values, thresholds and op (and
  the p x p table), with the verdict ``solved`` when that agreement reaches what the stated
  test accuracy allows, else ``unsolved`` (the best partial rule is still written).
- :func:`score` compares the recovered rule with the hidden rule and with the network on all
  ``p * p`` pairs.

Source: S. Casper et al., "EIS VII: Challenges for Interpretability Tools" (2023), challenge 2,
and its solutions (S. Heimersheim and others, 2023), see docs TECHNIQUES section 11.

Example:
    >>> sorted(solution_table({"op": "or", "filters": [{"g": [0.0, 1.0], "h": [0.0, 0.0], "threshold": 0.5},
    ...                                               {"g": [0.0, 0.0], "h": [0.0, 1.0], "threshold": 0.5}]}).tolist())
    [[0, 1], [1, 1]]
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import interplab
from interplab.analysis.directions import fit_threshold_rule
from interplab.analysis.filters import (
    additive_filter, effective_embeddings, filter_image, fit_filter_thresholds, refine_separable_rule,
)
from interplab.errors import check
from interplab.instrument import predict, site_values
from interplab.interventions.fixed_attention import fixed_attention_hooks, mean_patterns
from interplab.io import PathLike, atomic_write_bytes, atomic_write_json, read_json
from interplab.models import Transformer, TransformerConfig
from interplab.numerics import numerics
from interplab.runs import read_metrics, save_model
from interplab.studies.eis_transformer import published_train_config
from interplab.tasks.pair_labels import challenge2_config, pair_label_task, pair_rule_table, random_pair_rule
from interplab.train import TrainConfig, train_or_resume

FAMILY = "pairs"
SITE = "blocks.0.hook_resid_mid"
PATTERN = "blocks.0.attn.hook_pattern"
QUICK_EPOCHS = 200  # quick challenges: at most this many epochs (the default stopping rule may stop earlier)
SOLVED_AT = 0.95  # solved: the recovered rule provably (see solve) agrees with the hidden rule on at least this share


def make(seed: int, out: PathLike, *, quick: bool = False, data_dir: PathLike | None = None, quiet: bool = False,
         model_config: TransformerConfig | None = None, train_config: TrainConfig | None = None) -> Path:
    """Generate the pairs challenge of ``seed`` in ``out``; returns ``out``.

    The rule is :func:`random_pair_rule` of ``seed``; the network is the challenge 2
    transformer (:func:`challenge2_config`) trained on a random half of the pairs with
    :func:`published_train_config` (the default training-loss stopping rule); ``quick`` caps
    training at ``QUICK_EPOCHS`` epochs. ``model_config``/``train_config`` override both (tests
    use a small model). ``data_dir`` is accepted for the family interface (pairs need no data).
    Writes ``out/public/network/``, ``out/public/challenge.json``, the sealed
    ``out/answer.json``, and keeps the training run (with the label table) in ``out/train/``.
    An existing run with other settings is refused with one sentence.

    Example (a small network trained for one epoch; then an all-zero rule scored against it):
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> from interplab.studies.eis_transformer import small_setup
        >>> s, d = small_setup(epochs=1), Path(tempfile.mkdtemp())
        >>> c = make(1, d / "c", model_config=s["model_config"], train_config=s["train_config"], quiet=True)
        >>> sorted(x.name for x in (c / "public").iterdir()), json.loads((c / "answer.json").read_text())["rule_form"]
        (['challenge.json', 'network'], 'linear AND curved-bands')
        >>> _ = (d / "s.json").write_text(json.dumps({"table": ["0" * 113] * 113}))
        >>> round(score(c, d / "s.json")["agreement_hidden"], 4)  # share of pairs labeled 0
        0.5454
    """
    check(int(seed) >= 0, f"seed must be non-negative, got {seed}.")
    out = Path(out)
    rule = random_pair_rule(seed)
    table = pair_rule_table(rule)
    p = table.shape[0]
    work = out / "train"
    work.mkdir(parents=True, exist_ok=True)
    labels_path = work / "labels.pkl"
    atomic_write_bytes(labels_path, pickle.dumps({"labels": table}, protocol=4))
    task = pair_label_task(labels=str(labels_path), seed=seed)
    tcfg = train_config if train_config is not None else published_train_config(seed)
    if quick and train_config is None:
        tcfg = dataclasses.replace(tcfg, epochs=QUICK_EPOCHS)
    model = Transformer(model_config if model_config is not None else challenge2_config(p), seed=seed)
    with numerics(), torch.enable_grad():  # a finished run with the same settings is reloaded, not retrained
        result = train_or_resume(model, task, dataclasses.replace(tcfg, seed=seed), work / "run", quiet=quiet)
    logged = read_metrics(work / "run" / "metrics.jsonl", result.epochs_run)
    model.eval()
    with torch.no_grad():
        pred = predict(model, task.inputs, positions=[-1])
    right = pred == task.labels
    public = out / "public"
    save_model(public / "network", model)
    atomic_write_json(public / "challenge.json", {
        "family": FAMILY, "seed": int(seed), "p": p, "quick": bool(quick), "network": "network",
        "files": ["network/config.json", "network/model.safetensors"],
        "stated_test_accuracy": float(right[task.test_idx].double().mean()),
        "stated_train_accuracy": float(right[task.train_idx].double().mean()),
        "train_pairs": len(task.train_idx), "test_pairs": len(task.test_idx),
        "inputs": f"tokens [A, B, {p}] with A, B in 0..{p - 1}; the label (0 or 1) is read at the last position",
        "task": f"find the rule labeling all {p}x{p} pairs; the network was trained on a random half of them",
    })
    atomic_write_json(out / "answer.json", {
        "family": FAMILY, "seed": int(seed), "rule": rule, "rule_form": rule["form"],
        "positive_fraction": float(table.mean()), "network_accuracy_all": float(right.double().mean()),
        "epochs": int(result.epochs_run), "train_seconds": float(logged[-1]["time"]) if logged else 0.0,
    })
    return out


def solution_table(solution: dict[str, Any]) -> np.ndarray:
    """The 0/1 ``p x p`` table of a recovered rule ``{"op", "filters": [{"g", "h", "threshold"}, ...]}``:
    ``op`` over ``g[A] + h[B] > threshold``; a solution with only a ``"table"`` (rows of 0/1
    strings) gives that table. Raises when it has neither.

    Example: see the module docstring.
    """
    if "filters" in solution:
        check(solution.get("op") in ("and", "or"), f"A solution's op must be 'and' or 'or', got {solution.get('op')!r}.")
        sides = np.stack([np.asarray(f["g"], dtype=np.float64)[:, None] + np.asarray(f["h"], dtype=np.float64)[None, :]
                          > float(f["threshold"]) for f in solution["filters"]])
        return (sides.all(0) if solution["op"] == "and" else sides.any(0)).astype(np.int64)
    check("table" in solution, "A pairs solution needs 'filters' and 'op', or a 'table'.")
    return np.array([[int(c) for c in row] for row in solution["table"]], dtype=np.int64)


def _load_network(challenge: Path) -> tuple[Any, dict[str, Any], int]:
    public = challenge / "public"
    check((public / "challenge.json").is_file(), f"{public} has no challenge.json; is {challenge} a challenge directory?")
    info = read_json(public / "challenge.json")
    check(info.get("family") == FAMILY, f"{challenge} is a {info.get('family')!r} challenge, not a pairs challenge.")
    model = interplab.load(public / str(info.get("network", "network")))
    check(isinstance(model, Transformer), f"The network of {challenge} is not a transformer.")
    cfg = model.cfg
    check(cfg.n_layers == 1 and cfg.normalization == "none" and cfg.n_ctx == 3 and cfg.vocab_out == 2,
          f"The network of {challenge} is not a 1-layer pair-label transformer without LayerNorm.")
    return model, info, int(cfg.d_vocab) - 1


def _all_pairs(p: int) -> torch.Tensor:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)


def _candidate(name: str, gs: list[torch.Tensor], hs: list[torch.Tensor], target: torch.Tensor,
               op: str) -> dict[str, Any]:
    """Thresholds of ``op`` over the separable filters ``g + h`` refitted on the network's labels."""
    images = [g[:, None] + h[None, :] for g, h in zip(gs, hs)]
    thresholds, agree = fit_filter_thresholds(images, target, op)
    return {"method": name, "op": op, "agreement_network": agree,
            "filters": [{"g": g.tolist(), "h": h.tolist(), "threshold": t} for g, h, t in zip(gs, hs, thresholds)]}


@numerics()
@torch.no_grad()
def recover(model: Any, p: int, *, steps: int = 600, refine_steps: int = 300, seed: int = 0, quiet: bool = True) -> list[dict[str, Any]]:
    """Candidate rules for a pair-label network, best first (by agreement with its labels).

    For each op (AND, OR): two directions fitted on ``resid_mid`` at the last position of the
    fixed-attention model (:func:`fit_threshold_rule`, ``steps`` per start on 4096 random pairs,
    thresholds on all); (1) *filters*:
    effective embeddings projected on them, ``g(A) + h(B)`` exactly; (2) *additive*: the same
    fit on the full model's ``resid_mid``, each readout reduced to its additive part
    (:func:`additive_filter`). Thresholds of each candidate are refitted on the full
    network's labels (:func:`fit_filter_thresholds`). The best of these of each op is then
    refined on the network's labels, every per-token value free (:func:`refine_separable_rule`,
    ``refine_steps``), as two more candidates (with every value free, AND and OR can both fit,
    so the op of the best refined rule need not be the op of the best unrefined one). Each candidate: ``{"method", "op",
    "agreement_network", "filters": [{"g", "h", "threshold"}, ...]}``.
    """
    say = (lambda *a: None) if quiet else print
    inputs = _all_pairs(p)
    fwd = {"positions": [-1]}
    pred = predict(model, inputs, **fwd).bool()
    means = mean_patterns(model, inputs, **fwd)
    hooks = fixed_attention_hooks(means)
    pred_fixed = predict(model, inputs, hooks, **fwd).bool()
    mid_fixed = site_values(model, inputs, SITE, fwd_hooks=hooks, **fwd)[:, -1].double()
    mid_full = site_values(model, inputs, SITE, **fwd)[:, -1].double()
    eff = effective_embeddings(model, means[PATTERN], fixed_tokens={2: p})
    say(f"fixed attention keeps {float((pred_fixed == pred).double().mean()):.4f} of the labels")
    cands = []
    for op in ("and", "or"):
        rule = fit_threshold_rule(mid_fixed, pred_fixed, op=op, steps=steps, seed=seed)
        gs, hs = [], []
        for v in rule.directions:
            img = filter_image(eff, v, n_values=p)
            g, h = additive_filter(img)  # exact: img is separable
            gs.append(g)
            hs.append(h + img.mean())
        cands.append(_candidate("fixed-attention filters", gs, hs, pred, op))
        rule_full = fit_threshold_rule(mid_full, pred, op=op, steps=steps, seed=seed)
        parts = [additive_filter((mid_full @ v).reshape(p, p)) for v in rule_full.directions]
        cands.append(_candidate("additive readouts", [g for g, _ in parts], [h for _, h in parts], pred, op))
        say(f"{op}: " + ", ".join(f"{c['method']} {c['agreement_network']:.4f}" for c in cands[-2:]))
    # refinement frees every per-token value; then an AND and an OR can both come close to the labels,
    # and the better one after refinement need not be the op the unrefined readouts suggest
    for op in ("and", "or"):
        best = max((c for c in cands if c["op"] == op), key=lambda c: c["agreement_network"])
        gs, hs, thresholds, agree = refine_separable_rule([torch.tensor(f["g"]) for f in best["filters"]],
                                                          [torch.tensor(f["h"]) for f in best["filters"]],
                                                          pred.reshape(p, p), op, steps=refine_steps)
        say(f"refined {best['method']} ({op}): {agree:.4f}")
        cands.append({"method": f"{best['method']}, refined", "op": op, "agreement_network": agree,
                      "filters": [{"g": g.tolist(), "h": h.tolist(), "threshold": t}
                                  for g, h, t in zip(gs, hs, thresholds)]})
    return sorted(cands, key=lambda c: -c["agreement_network"])


def solve(challenge: PathLike, out: PathLike, *, quick: bool = False, data_dir: PathLike | None = None,
          quiet: bool = False) -> dict[str, Any]:
    """Recover the rule of the pairs challenge in ``challenge`` from ``challenge/public/`` only.

    Writes ``out/solution.json`` (``op``, ``filters`` with per-token values ``g``, ``h`` and a
    ``threshold`` each, ``op_unrefined`` (the op of the best rule before refinement), ``table``
    as p rows of 0/1 characters, ``verdict``, ``hidden_agreement_bound``, ``rule_form``, the
    candidates' agreements) and returns it. ``hidden_agreement_bound`` is
    ``agreement_network - e``, ``e`` the network's error on all pairs from its stated train and
    test accuracies (``challenge.json``; train accuracy 1 when not stated): by the triangle
    inequality the rule agrees with the hidden rule on at least that share.
    ``verdict`` is ``"solved"`` when the bound reaches ``SOLVED_AT`` (0.95), else
    ``"unsolved"`` with the best partial rule (a network that learned little cannot give more).
    ``quick`` uses shorter fits.
    Raises when ``challenge`` is not a pairs challenge.

    Example (on a challenge made by :func:`make`)::

        solve("challenges/pairs-0", "solutions/pairs-0")["verdict"]
    """
    t0 = time.perf_counter()
    challenge, out = Path(challenge), Path(out)
    model, info, p = _load_network(challenge)
    cands = recover(model, p, steps=250 if quick else 600, seed=int(info.get("seed", 0)), quiet=quiet)
    best = cands[0]
    # the network's error on all pairs, from its stated accuracies on the two halves (train accuracy 1
    # when a challenge does not state it); by the triangle inequality the rule disagrees with the
    # hidden rule on at most its disagreement with the network plus that error
    n_train, n_test = int(info.get("train_pairs", 1)), int(info.get("test_pairs", 1))
    net_error = ((1 - float(info.get("stated_train_accuracy", 1.0))) * n_train
                 + (1 - float(info.get("stated_test_accuracy", 0.0))) * n_test) / (n_train + n_test)
    bound = (1 - best["agreement_network"]) + net_error
    sol: dict[str, Any] = {
        "family": FAMILY, "p": p, "op": best["op"], "filters": best["filters"], "method": best["method"],
        "agreement_network": best["agreement_network"], "hidden_agreement_bound": 1 - bound,
        "verdict": "solved" if 1 - bound >= SOLVED_AT else "unsolved",
        "rule_form": f"g1(A) + h1(B) > t1 {best['op'].upper()} g2(A) + h2(B) > t2",
        "op_unrefined": max((c for c in cands if not c["method"].endswith("refined")),
                            key=lambda c: c["agreement_network"])["op"],
        "candidates": [{k: c[k] for k in ("method", "op", "agreement_network")} for c in cands],
    }
    sol["table"] = ["".join(str(int(v)) for v in row) for row in solution_table(sol)]
    sol["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "solution.json", sol)
    if not quiet:
        print(f"pairs challenge {challenge}: {sol['verdict']} ({best['method']}, {best['op'].upper()}, agreement with "
              f"the network {best['agreement_network']:.4f}, with the hidden rule at least {1 - bound:.4f} by the "
              f"stated accuracy); {out / 'solution.json'}")
    return sol


@torch.no_grad()
def score(challenge: PathLike, solution: PathLike, *, data_dir: PathLike | None = None) -> dict[str, Any]:
    """Compare a recovered rule (``solution``: ``solution.json`` or its directory) with the
    hidden rule (``challenge/answer.json``) and with the network, on all ``p * p`` pairs.

    Returns ``{"agreement_hidden", "agreement_network", "network_accuracy", "rule_form"
    (the hidden rule's families and op), "recovered_form", "verdict", "hidden_agreement_bound"
    (the solver's own lower bound)}``. Raises when a file
    is missing or the tables' sizes differ.

    Example (after :func:`make` and :func:`solve`)::

        score("challenges/pairs-0", "solutions/pairs-0")["agreement_hidden"]
    """
    challenge, solution = Path(challenge), Path(solution)
    path = solution / "solution.json" if solution.is_dir() else solution
    check(path.is_file(), f"No solution file at {path}.")
    check((challenge / "answer.json").is_file(), f"{challenge} has no answer.json to score against.")
    answer = read_json(challenge / "answer.json")
    hidden = pair_rule_table(answer["rule"])
    sol = read_json(path)
    table = solution_table(sol)
    check(table.shape == hidden.shape, f"The solution's table is {table.shape[0]}x{table.shape[1]}, the challenge's "
          f"{hidden.shape[0]}x{hidden.shape[1]}.")
    model, _, p = _load_network(challenge)
    net = predict(model, _all_pairs(p), positions=[-1]).numpy().reshape(p, p)
    return {"agreement_hidden": float((table == hidden).mean()), "agreement_network": float((table == net).mean()),
            "network_accuracy": float((net == hidden).mean()), "rule_form": answer["rule"]["form"],
            "recovered_form": str(sol.get("rule_form", "table")), "verdict": str(sol.get("verdict", "unsolved")),
            "hidden_agreement_bound": float(sol.get("hidden_agreement_bound", 0.0))}


__all__ = ["make", "solve", "score", "recover", "solution_table", "FAMILY", "QUICK_EPOCHS"]
