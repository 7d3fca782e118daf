"""Fact finding in memorization toy models: probes per layer, lookup tables, MLP ablations, path patching.

Reproduces the toy-model measurements of Nanda, Rajamanoharan, Kramar & Shah (2023), "Fact
Finding" (Alignment Forum), posts 3 and 4, on two models trained here:

(a) **an MLP lookup table**: one-hot pairs ``(a, b)`` mapped to random labels (every pair
    memorised). Per layer: linear-probe accuracy for the label on pairs the probe did not see
    (repeated over splits); the non-linear excess of each neuron on feature pairs
    ``a == i, b == j`` (its largest value, as a fraction of the neuron's range); and how far
    the layer breaks the linear (additive) structure of the input, against the same network
    at its random initialisation.
(b) **a transformer on two-token names**: each name ``[first, last]`` has a random attribute,
    read out at the last token. Where attention first moves the first name to the last
    position (the layer that combines the name tokens), where a linear probe for the attribute
    (on names it did not see) rises above chance, how much mean-ablating each MLP costs, path
    patching from layer-0 heads (which carry the first name) into each MLP and the logits, the
    same paths mean-ablated, and the correlation across names of single-neuron ablation effects
    in the first MLP.

``results.json``: ``probe_acc_by_layer`` (``mlp`` and ``transformer``: site -> mean test
accuracy), ``probe_acc_random_init``, ``nonlinear_excess_top`` (site -> top neurons, trained and
random), ``linearity_break_ratio`` (site -> [trained, random]), ``mlp_ablation_cost`` (layer ->
loss increase), ``combine_layer``, ``probe_rise_site``, ``path_patching`` and more.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from interplab.analysis.linearity import (ablation_effect_correlation, interaction_fraction, linearity_break,
                                          nonlinear_excess_table)
from interplab.analysis.probes import probe
from interplab.devices import Placement, to_host
from interplab.errors import check
from interplab.instrument import site_values
from interplab.interventions.ablate import ablate
from interplab.interventions.patching import path_patching
from interplab.models import MLP, Transformer
from interplab.report import Report, announce
from interplab.options import setting, study_command
from interplab.io import write_results
from interplab.runs import save_model
from interplab.tasks.memorization import memorization_task
from interplab.tasks.names import two_token_names_task
from interplab.train import TrainConfig, train


@dataclass(frozen=True)
class Settings:
    """Everything the study depends on; ``QUICK`` and ``FULL`` are the presets."""

    n: int = setting(30, "(a) Integers per side of a pair.", ge=2)
    mlp_hidden: tuple[int, ...] = setting((256, 256), "(a) Hidden widths of the lookup-table MLP.", ge=1)
    mlp_epochs: int = setting(800, "(a) Training epochs of the MLP.", ge=1)
    n_first: int = setting(40, "(b) First-name tokens.", ge=2)
    n_last: int = setting(40, "(b) Last-name tokens.", ge=2)
    n_names: int = setting(800, "(b) Names, each a random (first, last) pair.", ge=1)
    n_attributes: int = setting(4, "(b) Attribute values.", ge=2)
    d_model: int = setting(64, "(b) Transformer width.", ge=1)
    n_layers: int = setting(4, "(b) Transformer layers.", ge=1)
    d_mlp: int = setting(256, "(b) Transformer MLP width.", ge=1)
    max_epochs: int = setting(3000, "(b) Most training epochs (stops at 100% train accuracy, loss < 1e-3).", ge=1)
    n_splits: int = setting(10, "Probe repetitions (train/test splits).", ge=1)
    n_quads: int = setting(4000, "Samples for the linearity-breaking ratio.", ge=1)
    top_k: int = setting(5, "Neurons listed by non-linear excess.", ge=1)
    seed: int = setting(0, "Seed for the data, the models and the probe splits.", ge=0)


FULL = Settings()
QUICK = Settings(n=20, mlp_epochs=400, n_first=30, n_last=30, n_names=300, n_layers=2, max_epochs=1500,
                 n_splits=5, n_quads=2000)


def _probe_summary(acts: dict[str, torch.Tensor], y: torch.Tensor, s: Settings) -> dict[str, dict[str, float]]:
    out = {}
    for site, a in acts.items():
        r = probe(to_host(a), to_host(y), n_splits=s.n_splits, seed=s.seed)
        out[site] = {"mean": r.mean, "std": r.std, "chance": r.chance}
    return out


def _top_excess(table: torch.Tensor, k: int) -> dict[str, Any]:
    """Per neuron: the largest |non-linear excess| over feature pairs, in units of the layer's RMS
    activation, the top ``k`` neurons by it, and each neuron's non-additive variance share."""
    T = table.double()
    ex = nonlinear_excess_table(T).abs().flatten(0, 1)  # [pairs, units]
    rms = T.pow(2).mean().sqrt().clamp(min=1e-12)
    score = ex.amax(0) / rms
    best = ex.argmax(0)
    order = score.argsort(descending=True)[:k]
    n_b = table.shape[1]
    share = interaction_fraction(T)
    return {"values": score[order].tolist(), "neurons": order.tolist(),
            "pairs": [[int(best[i]) // n_b, int(best[i]) % n_b] for i in order], "all": score.tolist(),
            "interaction_share": share.tolist(), "mean_interaction_share": float(share.mean())}


def _shuffled_weights(model: MLP, seed: int) -> MLP:
    """A random network at the trained network's scale: each trained weight matrix and bias with its entries
    permuted (the same values, no learned structure)."""
    out = MLP(model.cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, q in zip(out.parameters(), model.parameters()):
            p.copy_(q.flatten()[torch.randperm(q.numel(), generator=g)].reshape(q.shape))
    return out.eval()


def memorization_part(s: Settings, out: Path, quiet: bool, placement: Placement | None = None) -> dict[str, Any]:
    """(a): train the MLP lookup table, probe, non-linear excess and linearity breaking per layer
    (the networks on ``placement``'s device and dtype; the measures on the CPU)."""
    placement = placement if placement is not None else Placement("cpu")
    task = memorization_task(n=s.n, n_classes=2, seed=s.seed, d_hidden=s.mlp_hidden)
    model = placement.apply(MLP(task.default_model_config(), seed=s.seed))
    init = placement.apply(MLP(task.default_model_config(), seed=s.seed))  # the same network before training
    res = train(model, task, TrainConfig(epochs=s.mlp_epochs, lr=1e-3, weight_decay=0.0, seed=s.seed,
                                         log_every=50), None, quiet=quiet)
    model.eval()
    save_model(out / "memorization-mlp", model, {"task": task.describe()})
    n_hidden = len(s.mlp_hidden)
    sites = ["hook_input"] + [f"layers.{i}.hook_post" for i in range(n_hidden)] + ["hook_logits"]
    pre = [f"layers.{i}.hook_pre" for i in range(n_hidden)]
    nets = {"trained": model, "random": init, "shuffled": placement.apply(_shuffled_weights(model, s.seed + 1))}
    acts = {k: to_host(site_values(m, task.inputs, sites + pre)) for k, m in nets.items()}
    g = torch.Generator().manual_seed(s.seed)
    ratio = {site: {k: linearity_break(a[site].reshape(s.n, s.n, -1), s.n_quads, g)["ratio"] for k, a in acts.items()}
             for site in sites + pre}
    hidden = [x for x in sites if x.startswith("layers.")]
    excess = {site: {"trained": _top_excess(acts["trained"][site].reshape(s.n, s.n, -1), s.top_k),
                     "random": _top_excess(acts["random"][site].reshape(s.n, s.n, -1), s.top_k)} for site in hidden}
    return {"train_acc": res.final.get("train_acc"), "sites": sites,
            "probe": _probe_summary({x: acts["trained"][x] for x in sites}, task.labels, s),
            "probe_random": _probe_summary({x: acts["random"][x] for x in sites}, task.labels, s),
            "linearity_break_ratio": {x: [ratio[x]["trained"], ratio[x]["random"]] for x in sites},
            "linearity_break_pre": {x: [ratio[x]["trained"], ratio[x]["random"]] for x in pre},
            "linearity_break_shuffled": {x: ratio[x]["shuffled"] for x in sites + pre},
            "active_fraction": {x: [float((acts[k][x] > 0).double().mean()) for k in ("trained", "random")] for x in pre},
            "excess": excess}


def _log_prob_metric(y: torch.Tensor):
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits[:, -1].float(), -1)[torch.arange(len(y), device=y.device), y].mean()
    return metric


def names_part(s: Settings, out: Path, quiet: bool, placement: Placement | None = None) -> dict[str, Any]:
    """(b): train the two-token-names transformer; combine layer, probes, MLP ablations, path patching
    (on ``placement``'s device and dtype)."""
    placement = placement if placement is not None else Placement("cpu")
    task = two_token_names_task(n_first=s.n_first, n_last=s.n_last, n_names=s.n_names, n_attributes=s.n_attributes,
                                seed=s.seed, d_model=s.d_model, n_layers=s.n_layers, d_mlp=s.d_mlp)
    model = placement.apply(Transformer(task.default_model_config(), seed=s.seed))
    init = placement.apply(Transformer(task.default_model_config(), seed=s.seed))
    res = train(model, task, TrainConfig(epochs=s.max_epochs, lr=3e-3, weight_decay=0.1, seed=s.seed, log_every=25),
                None, quiet=quiet, stop=lambda row: row["train_acc"] == 1.0 and row["train_loss"] < 1e-3)
    model.eval()
    save_model(out / "names-transformer", model, {"task": task.describe()})
    x, y = task.inputs.to(placement.torch_device), task.labels.to(placement.torch_device)
    L = s.n_layers

    # where the name tokens are combined: attention from the last position to the first name
    _, pats = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_pattern"))
    attn_first = [float(pats[f"blocks.{l}.attn.hook_pattern"][:, :, 1, 0].mean(0).max()) for l in range(L)]
    combine_layer = next((l for l, a in enumerate(attn_first) if a > 0.1), None)

    sites = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_{k}" for l in range(L) for k in ("resid_mid", "resid_post")]
    probes = _probe_summary(site_values(model, x, sites, position=-1), y, s)
    probes0 = _probe_summary(site_values(init, x, sites, position=-1), y, s)
    rise = next((site for site in sites if probes[site]["mean"] > probes[site]["chance"] + 0.1
                 and probes[site]["mean"] > probes[site]["chance"] + 3 * probes[site]["std"]), None)

    # mean-ablating each MLP (mean over names, per position): increase of the loss at the last position
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(x, positions=[-1])[:, 0], y).item()
        cost = {}
        for l in range(L):
            site = f"blocks.{l}.hook_mlp_out"
            ref = site_values(model, x, site, positions=[-1])
            out_l = ablate(model, x, site, "mean", reference=ref, positions=[-1])
            cost[str(l)] = F.cross_entropy(out_l[:, 0], y).item() - clean_loss

    # path patching: corrupt the first name, restore layer-0 heads' outputs along single paths
    g = torch.Generator().manual_seed(s.seed + 1)
    corrupt = x.clone()
    corrupt[:, 0] = (x[:, 0] + torch.randint(1, s.n_first, (len(x),), generator=g).to(x.device)) % s.n_first
    metric = _log_prob_metric(y)
    with torch.no_grad():
        total = (metric(model(x)) - metric(model(corrupt))).item()
    receivers: list[Any] = [(l, "mlp") for l in range(L)] + ["logits"]
    paths: dict[str, dict[str, float]] = {}
    mean_paths: dict[str, dict[str, float]] = {}
    for h in range(model.cfg.n_heads):
        row, mrow = {}, {}
        for r in receivers:
            key = "logits" if r == "logits" else f"mlp{r[0]}"
            row[key] = path_patching(model, x, corrupt, metric, (0, h), [r]).item() / total
            mrow[key] = -path_patching(model, x, None, metric, (0, h), [r], reference=x).item()
        paths[f"head 0.{h}"] = row
        mean_paths[f"head 0.{h}"] = mrow
    for l in range(L):
        row = {"logits": path_patching(model, x, corrupt, metric, (l, None), ["logits"]).item() / total}
        for l2 in range(l + 1, L):
            row[f"mlp{l2}"] = path_patching(model, x, corrupt, metric, (l, None), [(l2, "mlp")]).item() / total
        paths[f"mlp{l}"] = row

    # single-neuron ablation effects in MLP 0, per name, and their correlation across names
    site = "blocks.0.mlp.hook_post"
    with torch.no_grad():
        ref = site_values(model, x, site, positions=[-1])
        rows = torch.arange(len(y), device=y.device)
        base_lp = F.log_softmax(model(x, positions=[-1])[:, 0], -1)[rows, y]
        effects = torch.stack([
            F.log_softmax(ablate(model, x, site, "mean", units=[i], reference=ref, positions=[-1])[:, 0], -1)
            [rows, y] - base_lp for i in range(s.d_mlp)])
    alive = effects.abs().amax(1) > 1e-6
    corr = ablation_effect_correlation(effects[alive]) if int(alive.sum()) >= 2 else None
    return {"train_acc": res.final.get("train_acc"), "epochs": res.epochs_run, "sites": sites,
            "attn_to_first_name": attn_first, "combine_layer": combine_layer, "probe": probes,
            "probe_random": probes0, "probe_rise_site": rise, "clean_loss": clean_loss, "mlp_ablation_cost": cost,
            "total_effect": total, "path_patching": paths, "mean_ablated_paths": mean_paths,
            "neuron_effect_corr": None if corr is None else {
                "mean_offdiag": corr["mean_offdiag"], "mean_abs_offdiag": corr["mean_abs_offdiag"],
                "independent_abs": math.sqrt(2 / (math.pi * int(alive.sum()))), "n_neurons": int(alive.sum())}}


def run(out_dir: str | Path, quick: bool = False, settings: Settings | None = None, quiet: bool = False,
        device: str = "auto", dtype: str = "float32") -> dict[str, Any]:
    """Run both parts into ``out_dir``; writes results.json and report.html, returns the results.

    ``run(out, quick=True)`` takes under a minute on 2 cores; ``settings`` overrides the presets
    (``tests/test_studies_fact_finding_embeddings.py`` runs a smaller one). The networks train and are
    probed, ablated and patched on ``device`` in ``dtype`` (recorded in results.json).

    Example:
        >>> QUICK.n_layers, FULL.n_layers, dataclasses.replace(QUICK, seed=3).seed
        (2, 4, 3)
    """
    t0 = time.perf_counter()
    s = settings if settings is not None else (QUICK if quick else FULL)
    check(s.n >= 3 and s.n_names >= 10, "The study needs n >= 3 and n_names >= 10.")
    placement = Placement(device, dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = memorization_part(s, out, quiet, placement)
    b = names_part(s, out, quiet, placement)
    results: dict[str, Any] = {
        "settings": dataclasses.asdict(s),
        "probe_acc_by_layer": {"mlp": {k: v["mean"] for k, v in a["probe"].items()},
                               "transformer": {k: v["mean"] for k, v in b["probe"].items()}},
        "probe_acc_std": {"mlp": {k: v["std"] for k, v in a["probe"].items()},
                          "transformer": {k: v["std"] for k, v in b["probe"].items()}},
        "probe_chance": {"mlp": a["probe"]["hook_input"]["chance"], "transformer": b["probe"][b["sites"][0]]["chance"]},
        "probe_acc_random_init": {"mlp": {k: v["mean"] for k, v in a["probe_random"].items()},
                                  "transformer": {k: v["mean"] for k, v in b["probe_random"].items()}},
        "nonlinear_excess_top": {site: {"trained": e["trained"]["values"], "random": e["random"]["values"],
                                        "neurons": e["trained"]["neurons"], "pairs": e["trained"]["pairs"]}
                                 for site, e in a["excess"].items()},
        "interaction_share": {site: [e["trained"]["mean_interaction_share"], e["random"]["mean_interaction_share"]]
                              for site, e in a["excess"].items()},
        "linearity_break_ratio": a["linearity_break_ratio"],
        "linearity_break_ratio_pre": a["linearity_break_pre"],
        "linearity_break_ratio_shuffled_weights": a["linearity_break_shuffled"],
        "active_fraction": a["active_fraction"],
        "mlp_ablation_cost": b["mlp_ablation_cost"],
        "combine_layer": b["combine_layer"],
        "attn_to_first_name": b["attn_to_first_name"],
        "probe_rise_site": b["probe_rise_site"],
        "probe_rises_after_combine": _rises_after(b),
        "path_patching": b["path_patching"],
        "mean_ablated_path_cost": b["mean_ablated_paths"],
        "path_patching_total_effect": b["total_effect"],
        "neuron_ablation_effect_corr": b["neuron_effect_corr"],
        "mlp_train_acc": a["train_acc"], "transformer_train_acc": b["train_acc"],
        "transformer_clean_loss": b["clean_loss"],
        "seconds": round(time.perf_counter() - t0, 1),
        **placement.record(),
    }
    write_results(out, results)
    path = _report(results, a, b).save(out / "report.html")
    hid = [k for k in a["linearity_break_ratio"] if k.startswith("layers.")]
    announce([
        "fact-finding (a) MLP lookup table: probe acc " + ", ".join(
            f"{_short(k)} {v:.2f}" for k, v in results["probe_acc_by_layer"]["mlp"].items())
        + "; linearity break [trained, random init] " + ", ".join(
            f"{_short(k)} [{a['linearity_break_ratio'][k][0]:.2f}, {a['linearity_break_ratio'][k][1]:.2f}]" for k in hid),
        f"(b) names transformer: name tokens combined by the attention of layer {b['combine_layer']}; attribute probe "
        f"rises above chance at {_short(str(b['probe_rise_site']))} ("
        + ", ".join(f"{_short(k)} {v['mean']:.2f}" for k, v in b["probe"].items())
        + f"; chance {results['probe_chance']['transformer']:.2f}); MLP ablation cost "
        + ", ".join(f"{k}: {v:.3f}" for k, v in b["mlp_ablation_cost"].items())], path)
    return results


def _rises_after(b: dict[str, Any]) -> bool | None:
    """Whether the attribute probe first rises above chance at or after the first site that has seen the
    combining attention layer (``blocks.{combine}.hook_resid_mid``); None when either is missing."""
    if b["combine_layer"] is None or b["probe_rise_site"] is None:
        return None
    return b["sites"].index(b["probe_rise_site"]) >= b["sites"].index(f"blocks.{b['combine_layer']}.hook_resid_mid")


def _short(site: str) -> str:
    return site.replace("blocks.", "").replace("hook_", "").replace("layers.", "L")


def _report(results: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> Report:
    s = results["settings"]
    r = Report("Fact finding in memorization toy models",
               subtitle="Probes per layer, non-linear excess, breaking of linear structure, MLP ablations and path "
                        "patching (Nanda et al. 2023, Fact Finding posts 3 and 4)")
    tr = results["probe_acc_by_layer"]["transformer"]
    r.numbers({"(a) MLP train acc": a["train_acc"], "(b) transformer train acc": b["train_acc"],
               "(b) names combined at layer": str(b["combine_layer"]),
               "(b) attribute probe rises at": _short(str(b["probe_rise_site"])),
               "(b) probe chance": results["probe_chance"]["transformer"],
               "seconds": results["seconds"]})

    r.section("(a) An MLP lookup table: one-hot pairs (a, b) to random labels")
    r.text(f"An MLP with hidden widths {tuple(s['mlp_hidden'])} memorises random binary labels of all "
           f"{s['n']}x{s['n']} pairs. A linear probe for the label is trained on some pairs' activations and tested on "
           f"the others ({s['n_splits']} random splits); accuracy at chance at a layer means the label is not "
           "a linear function of that layer's representation of (a, b).")
    sites = a["sites"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    xs = np.arange(len(sites))
    for key, label in (("probe", "trained"), ("probe_random", "random init")):
        axes[0].errorbar(xs, [a[key][k]["mean"] for k in sites], yerr=[a[key][k]["std"] for k in sites], marker="o",
                         label=label, capsize=3)
    axes[0].axhline(a["probe"]["hook_input"]["chance"], color="gray", ls="--", lw=1, label="chance")
    axes[0].set_xticks(xs, [_short(k) for k in sites], rotation=20)
    axes[0].set_ylabel("probe test accuracy")
    axes[0].legend(fontsize=8)
    br = a["linearity_break_ratio"]
    allbr = {**br, **a["linearity_break_pre"]}
    order = ["hook_input"] + [x for i in range(len(s["mlp_hidden"])) for x in (f"layers.{i}.hook_pre", f"layers.{i}.hook_post")] \
        + ["hook_logits"]
    xo = np.arange(len(order))
    axes[1].bar(xo - 0.27, [allbr[k][0] for k in order], 0.27, label="trained")
    axes[1].bar(xo, [allbr[k][1] for k in order], 0.27, label="random init")
    axes[1].bar(xo + 0.27, [a["linearity_break_shuffled"][k] for k in order], 0.27, label="trained weights shuffled",
                color="gray")
    axes[1].set_xticks(xo, [_short(k) for k in order], rotation=20)
    axes[1].set_ylabel("linearity break ratio")
    axes[1].legend(fontsize=8)
    r.figure(fig, caption="Left: label probe accuracy per layer (mean and spread over splits). Right: distance between "
                          "the midpoints of f(A1B1), f(A2B2) and of f(A1B2), f(A2B1), over the same for random pairs "
                          "(0: the layer keeps the additive structure of the input; 1: none left), at each layer's "
                          "pre-activation and after its ReLU, for the trained network, the same network at "
                          "initialisation, and a network with the trained weights' values shuffled within each matrix.")
    r.table(["site", "probe acc (trained)", "std", "probe acc (random init)", "break ratio (trained)",
             "break ratio (random init)"],
            [[k, a["probe"][k]["mean"], a["probe"][k]["std"], a["probe_random"][k]["mean"], br[k][0], br[k][1]]
             for k in sites])
    hidden = list(a["excess"])
    fig, axes = plt.subplots(2, len(hidden), figsize=(4.5 * len(hidden), 5.6), squeeze=False)
    for j, site in enumerate(hidden):
        for i, (key, label) in enumerate((("all", "max |non-linear excess| / layer RMS"),
                                          ("interaction_share", "non-additive share of variance"))):
            ax = axes[i, j]
            vals = a["excess"][site]["trained"][key] + a["excess"][site]["random"][key]
            bins = np.linspace(0, max(vals) if key == "all" else 1, 26)
            ax.hist(a["excess"][site]["random"][key], bins=bins, alpha=0.6, label="random init")
            ax.hist(a["excess"][site]["trained"][key], bins=bins, alpha=0.6, label="trained")
            ax.set_title(_short(site), fontsize=9)
            ax.set_xlabel(label)
            ax.legend(fontsize=8)
    fig.tight_layout()
    r.figure(fig, caption="Per neuron. Top: the largest non-linear excess E[f|A,B] - E[f|~A,B] - E[f|A,~B] + "
                          "E[f|~A,~B] over feature pairs A = (a == i), B = (b == j), in units of the layer's RMS "
                          "activation. Bottom: the share of the neuron's variance over all pairs that is not a sum of "
                          "a function of a and a function of b (0: additive; a pure AND of one a and one b in an n x n table: (n-1)/(n+1)).")
    first, last = hidden[0], hidden[-1]
    br, share = a["linearity_break_ratio"], results["interaction_share"]
    pre, shuf, act = a["linearity_break_pre"], a["linearity_break_shuffled"], a["active_fraction"]
    pre0, pre_last = "layers.0.hook_pre", last.replace("hook_post", "hook_pre")
    more = [k for k in hidden if br[k][0] > br[k][1]]
    r.text("Mean non-additive share per layer [trained, random init]: " + ", ".join(
        f"{_short(k)} [{v[0]:.3f}, {v[1]:.3f}]" for k, v in share.items()) + ". "
        f"Trained layers that break the linear structure more than the same layer at initialisation: "
        f"{', '.join(_short(k) for k in more) or 'none'}; of the hidden layers, "
        f"{', '.join(_short(k) for k in hidden if k not in more) or 'none'} do not.")
    r.text(f"Why the first hidden layer does not: its pre-activation is u(a) + v(b) whatever the weights (one-hot "
           f"inputs; break ratio {pre[pre0][0]:.2f}), so it can break the additive structure only where the ReLU cuts. "
           f"At initialisation the biases are zero and the ReLU cuts half of the units' values on any input "
           f"(active fraction {act[pre0][1]:.2f}); after training it is {act[pre0][0]:.2f}: the ReLU still cuts about as "
           f"much as at initialisation, and the break ratio is {br[first][0]:.2f} against {br[first][1]:.2f} at "
           f"initialisation and {shuf[first]:.2f} for a network with the trained weights' own values shuffled "
           f"(a random network at the trained scale). The ratio is a property of the whole layer's geometry, which "
           f"training barely changes here, although the label has become linearly readable there (probe "
           f"{a['probe'][first]['mean']:.2f}, against {a['probe_random'][first]['mean']:.2f} at initialisation). What the "
           f"next layer reads from it is far less additive: at its pre-activation, a linear map of the first layer, the "
           f"ratio is {pre[pre_last][0]:.2f} trained against {pre[pre_last][1]:.2f} at initialisation, and after its ReLU "
           f"{br[last][0]:.2f} against {br[last][1]:.2f}" + (f" (its ReLU barely cuts: active fraction {act[pre_last][0]:.2f})"
           if pre_last != pre0 else "") + ". The trained weights pick out the non-additive part of the first layer; "
           "the per-site ratio, weighting every direction by its variance, does not see that.")
    r.table(["site", "neuron", "pair (a, b)", "excess / layer RMS", "random init top"],
            [[site, n, str(tuple(p)), v, vr] for site in hidden
             for n, p, v, vr in zip(a["excess"][site]["trained"]["neurons"], a["excess"][site]["trained"]["pairs"],
                                    a["excess"][site]["trained"]["values"], a["excess"][site]["random"]["values"])],
            caption="Top neurons by non-linear excess.")

    r.section("(b) A transformer on two-token names: where the attribute appears")
    r.text(f"{s['n_names']} names [first, last] ({s['n_first']} first and {s['n_last']} last tokens, each shared by "
           f"several names) with random attributes ({s['n_attributes']} classes), memorised by a {s['n_layers']}-layer "
           f"transformer (d_model {s['d_model']}, d_mlp {s['d_mlp']}). The attribute depends on the pair only, so the "
           f"model must bring the first name to the last position and look the pair up. The probe is trained on some "
           f"names and tested on others.")
    rise = b["probe_rise_site"]
    combine = b["combine_layer"]
    first_site = b["sites"][0]
    r.text(f"The name tokens are first combined by the attention of layer {combine} (the first layer whose heads "
           f"attend from the last position to the first name with weight above 0.1: "
           + ", ".join(f"layer {l} {w:.2f}" for l, w in enumerate(b["attn_to_first_name"])) + "). "
           f"The attribute probe is at chance before that ({_short(first_site)}: {b['probe'][first_site]['mean']:.2f}, "
           f"chance {results['probe_chance']['transformer']:.2f}) and first rises above chance at "
           f"{_short(str(rise))}" + (f" ({b['probe'][rise]['mean']:.2f})" if rise else "") + ". "
           + {True: "That is after the combining layer's attention: the attribute becomes readable only once the "
                    "name tokens have been brought together.",
              False: "That is before the combining layer's attention: the probe reads something other than the "
                     "combined name.",
              None: "One of the two is missing, so the order cannot be stated."}[results["probe_rises_after_combine"]])
    sites = b["sites"]
    xs = np.arange(len(sites))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label in (("probe", "trained"), ("probe_random", "random init")):
        axes[0].errorbar(xs, [b[key][k]["mean"] for k in sites], yerr=[b[key][k]["std"] for k in sites], marker="o",
                         capsize=3, label=label)
    axes[0].axhline(results["probe_chance"]["transformer"], color="gray", ls="--", lw=1, label="chance")
    axes[0].set_xticks(xs, [_short(k) for k in sites], rotation=30)
    axes[0].set_ylabel("attribute probe test accuracy")
    axes[0].legend(fontsize=8)
    cost = b["mlp_ablation_cost"]
    axes[1].bar(list(cost), list(cost.values()))
    axes[1].set_xlabel("MLP layer (mean-ablated)")
    axes[1].set_ylabel("loss increase (nats)")
    r.figure(fig, caption="Left: attribute probe accuracy at the last position, per site (mean and spread over "
                          "splits). Right: increase of the loss when one MLP's output is replaced by its mean.")
    r.table(["site", "probe acc", "std", "random init"],
            [[k, b["probe"][k]["mean"], b["probe"][k]["std"], b["probe_random"][k]["mean"]] for k in sites])
    r.table(["layer", "max head attention last -> first name", "MLP ablation loss increase"],
            [[l, b["attn_to_first_name"][l], cost[str(l)]] for l in range(s["n_layers"])],
            caption=f"Clean loss {b['clean_loss']:.4g}.")

    r.section("(b) Path patching from the first name through the MLPs")
    r.text("Clean: each name; corrupted: the same name with another first-name token. A sender's clean output is "
           "restored along one path only (into one MLP's input, or straight to the logits); the number is the "
           "fraction of the total effect on the correct attribute's log-probability "
           f"(total {b['total_effect']:.3g} nats). Mean-ablated paths: on clean names, the sender's output along "
           "the path is replaced by its mean over names; the number is the drop in log-probability.")
    cols = [f"mlp{l}" for l in range(s["n_layers"])] + ["logits"]
    rows = list(b["path_patching"])
    grid = np.array([[b["path_patching"][rw].get(c, np.nan) for c in cols] for rw in rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2, 0.45 * len(rows) + 1.2))
    im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.04)
    r.figure(fig, caption="Path-patching effect (fraction of the total) from each sender (rows) into each receiver.")
    r.table(["sender"] + cols, [[rw] + [b["mean_ablated_paths"][rw].get(c, "") for c in cols]
                                for rw in b["mean_ablated_paths"]], caption="Mean-ablated paths: log-prob drop (nats).")
    c = b["neuron_effect_corr"]
    if c is not None:
        r.text(f"Mean-ablating single neurons of MLP 0: the correlation across names of their effects on the correct "
               f"attribute's log-probability is {c['mean_offdiag']:.3f} on average (mean |r| {c['mean_abs_offdiag']:.3f}; "
               f"independent effects would give about {c['independent_abs']:.3f} over {c['n_neurons']} neurons).")
    return r


cli = study_command(Settings, run, {"full": FULL, "quick": QUICK}, settings_arg="settings",
                    doc="Fact finding in memorization toy models: probes per layer, lookup tables, MLP ablations, "
                        "path patching.")


__all__ = ["Settings", "QUICK", "FULL", "run", "cli", "memorization_part", "names_part"]
