"""Recover the EIS VII challenge 1 labeling rule from the CNN's internals and test it causally.

The challenge gives a small CNN trained on a secret binary labeling of MNIST and a hint
image. This study finds the rule from the network itself, with no template, threshold or
formula typed in:

1. the logit-difference direction ``fc2[1] - fc2[0]`` in the 200 fc1 units and each unit's
   direct logit attribution;
2. PCA of the fc1 activations (two arms of a V) and one fitted direction per arm;
3. feature visualization of every fc1 unit and of each arm direction;
4. candidate templates from the hint image (decoded from its 213x214 rendering), its inverse,
   the arms' feature visualizations and the mean of the inputs furthest along each arm; the
   rule search scores images by similarity to each template (plain, mean- or
   mid-centered) and fits threshold / band / two-sided rules to the network's labels;
5. unit groups (detectors of each side of the recovered score, the rest, dead units), zero
   and min ablation per group split by region, and causal scrubbing of the group hypothesis
   with a tolerance on the score swept from 0.01% to 10% of its range.

``--model`` and ``--hint`` point it at another challenge of the same form (a state dict of
the same architecture, any sizes, and a hint image). Writes ``results.json`` and
``report.html``; prints the recovered rule as a Python function and its agreement.

Example (a doctest would take too long; see tests/test_eis_cnn.py)::

    from interplab.studies.eis_cnn import run
    results = run("runs/eis-cnn")
    results["rule_agree"]
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interplab import data
from interplab.options import parameter, setting, study_command
from interplab.analysis.image_rules import arm_templates
from interplab.analysis.featviz import unit_directions, visualize
from interplab.analysis.grouping import group_units, groups_by_selectivity
from interplab.analysis.logit_attribution import (direct_logit_attribution, logit_diff, logit_diff_bias,
                                                  logit_diff_direction)
from interplab.analysis.pca import pca
from interplab.analysis.rules import Rule, fit_score_rule, search_rules, source_agreement
from interplab.analysis.templates import decode_hint, load_image
from interplab.devices import Placement, to_host
from interplab.instrument import site_values
from interplab.interventions.ablate import ablate_by_region
from interplab.interventions.scrub import Hypothesis, grouped_hypothesis, scrub_many
from interplab.io import PathLike, write_results
from interplab.models import ConvNet, pixels_to_input
from interplab.numerics import numerics
from interplab.report import Report, announce, image_grid
from interplab.tasks import mnist
from interplab.tasks.mnist import has_split, load_mnist

SITE = "fc1.hook_post"
PRE_SITE = "fc1.hook_pre"
TOLERANCES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
MODEL_FILE = "eis-vii/mnist_model.pt"
HINT_FILE = "eis-vii/mnist_example.png"


@dataclass(frozen=True)
class Settings:
    """What the study can be asked to change (``FULL`` and ``QUICK`` below)."""

    seed: int = setting(0, "Seed for every random draw.", ge=0)
    n_draws: int = setting(5, "Random draws per causal scrubbing setting.", ge=1, le=1000, flag="--draws")
    featviz_steps: int = setting(96, "Optimisation steps of the feature visualisations.", ge=1, le=100_000)
    n_extreme: int = setting(50, "Inputs furthest along an arm averaged into its extreme template.", ge=1,
                             le=10_000)
    max_train: int = setting(20000, "Most MNIST training images the rule is fitted on (when the data directory "
                             "has the training set).", ge=1, le=60_000)


FULL = Settings()
QUICK = Settings(n_draws=2)


@torch.no_grad()
def _labels(net: ConvNet, images: np.ndarray) -> np.ndarray:
    return net(pixels_to_input(images)).argmax(-1).cpu().numpy()


def _mechanism(groups: dict[str, torch.Tensor], acts: torch.Tensor, rh: torch.Tensor, v: torch.Tensor,
               abl: dict[tuple[str, str], dict[str, float]], cut: float, rule: Rule) -> str:
    """A paragraph on how the groups produce the label, written from the measured numbers."""
    def mean_act(m: torch.Tensor, where: torch.Tensor) -> float:
        return float(acts[where][:, m].mean()) if len(m) and bool(where.any()) else 0.0

    parts = []
    for name, own, side in (("a", rh, "above"), ("b", ~rh, "below")):
        m = groups[name]
        if not len(m):
            continue
        w = float(v[m].mean())
        line = (f"Group {name} ({len(m)} units) fires on inputs whose score is {side} {cut:.4g} (mean activation "
                f"{mean_act(m, own):.3g} there, {mean_act(m, ~own):.3g} on the other side) and writes "
                f"{'towards label 1' if w > 0 else 'towards label 0'} (mean weight {w:+.3g} on the logit difference)")
        row = abl.get((name, "min"))
        if row is not None:
            line += (f"; min-ablating it keeps {row['own_agree']:.3f} of the labels on its side and "
                     f"{row['other_agree']:.3f} on the other")
        parts.append(line + ".")
    m = groups["other"]
    if len(m):
        w = float(v[m].mean())
        always = float((acts[:, m] > 0).float().mean())
        parts.append(f"The other {len(m)} units are active on {always:.2f} of (input, unit) pairs and have mean "
                     f"weight {w:+.3g}: {'a bias against label 1 that a detector group must overcome' if w < 0 else 'no threshold role'}.")
    if len(groups["dead"]):
        parts.append(f"{len(groups['dead'])} units are never active on the data.")
    if rule.kind == "two-sided":
        parts.append("So the network says 1 when either detector group fires strongly enough, that is when the "
                     "score lies far enough from the middle on either side: a two-sided rule.")
    elif rule.kind == "band":
        parts.append("So the label depends on how far the score lies from the middle, with one detector group "
                     "per side: a band on the score.")
    return " ".join(parts)


def _results(*, rule: Rule, source: str, rule_agree: float, test_vs_rule: float, source_agree: float, from_network: list[Rule],
             norm_agree: float, fit_x: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, test_labels: np.ndarray,
             labels: torch.Tensor, probs: torch.Tensor, probs_norm: torch.Tensor, labels_norm: np.ndarray,
             dla_error: float, p: Any, arms: Any, v: torch.Tensor, groups: dict[str, torch.Tensor], cut: float,
             region_hi: np.ndarray, at_1pct: float, curve: dict[str, float], scrubbed: list[Any], n_tol: int,
             seed: int, abl: dict[tuple[str, str], dict[str, float]]) -> dict[str, Any]:
    """The flat ``results.json`` record of the study (``wall_time_s`` is added by ``run``)."""
    results: dict[str, Any] = {
        "model_test_acc_vs_rule": test_vs_rule,
        "rule_agree": rule_agree,
        "rule_source": source,
        "rule_description": rule.describe(),
        "rule_template": rule.template_name,
        "rule_center": rule.center,
        "rule_kind": rule.kind,
        "rule_lo": rule.lo,
        "rule_hi": rule.hi,
        "rule_source_test_agree": source_agree,
        "rule_agree_network_templates_only": from_network[0].agree if from_network else float("nan"),
        "rule_template_network_templates_only": from_network[0].template_name if from_network else "",
        "rule_agree_if_inputs_normalized": norm_agree,
        "n_fit_images": len(fit_x),
        "n_test_images": len(test_x),
        "used_train_set": fit_x is not test_x,
        "model_label1_frac": float(labels.float().mean()),
        "model_mean_confidence": float(probs.max(-1).values.mean()),
        "model_mean_confidence_if_inputs_normalized": float(probs_norm.max(-1).values.mean()),
        "model_label1_frac_if_inputs_normalized": float(labels_norm.mean()),
        "model_acc_vs_digit_is_1": float((test_labels == (test_y == 1)).mean()),
        "dla_reconstruction_max_error": dla_error,
        "pca_var_explained_1": p.explained(1),
        "pca_var_explained_2": p.explained(2),
        "arm_logit_diff_weights": (arms.directions.to(v.dtype) @ v).tolist(),
        "n_units_group_a": len(groups["a"]),
        "n_units_group_b": len(groups["b"]),
        "n_units_other": len(groups["other"]),
        "n_units_dead": len(groups["dead"]),
        "region_cut": cut,
        "region_hi_frac": float(region_hi.mean()),
        "scrub_agree_at_1pct": at_1pct,
        "scrub_curve": curve,
        "scrub_agree_same_region_only": scrubbed[n_tol].agree,
        "scrub_agree_everything_free": scrubbed[n_tol + 1].agree,
        "seed": seed,
    }
    for (name, method), row in abl.items():
        if name == "other":
            results[f"{method}_ablate_agree_other"] = row["own_agree"]
            continue
        results[f"{method}_ablate_own_region_agree_{name}"] = row["own_agree"]
        results[f"{method}_ablate_other_region_agree_{name}"] = row["other_agree"]
        results[f"{method}_ablate_own_region_dlogit_{name}"] = row["own_dld"]
        results[f"{method}_ablate_other_region_dlogit_{name}"] = row["other_dld"]

    return results


def _report(*, model_file: Path, hint_file: Path, seed: int, results: dict[str, Any], rule: Rule,
            rules: list[Rule], from_network: list[Rule], fit_note: str, rendered: np.ndarray, hint: np.ndarray,
            score: np.ndarray, labels_np: np.ndarray, norm_agree: float, dla: torch.Tensor, v: torch.Tensor,
            groups: dict[str, torch.Tensor], acts: torch.Tensor, rh: torch.Tensor,
            abl: dict[tuple[str, str], dict[str, float]], p: Any, pcs: np.ndarray, arms: Any,
            arm_pos: torch.Tensor, fv_arms: np.ndarray, fv_units: np.ndarray, templates: dict[str, np.ndarray],
            n_extreme: int, tolerances: tuple[float, ...], hyps: list[Hypothesis], scrubbed: list[Any],
            n_draws: int) -> Report:
    """The study's report, from the measured numbers (the wall-time line and saving are left to ``run``)."""
    import matplotlib.pyplot as plt

    rule_agree, test_vs_rule = results["rule_agree"], results["model_test_acc_vs_rule"]
    dla_error = results["dla_reconstruction_max_error"]
    at_1pct, source_agree, source = results["scrub_agree_at_1pct"], results["rule_source_test_agree"], results["rule_source"]
    dead, cut, curve = groups["dead"], results["region_cut"], results["scrub_curve"]
    region_hi = rh.numpy()
    ablation_rows = [[f"group {name} ({len(groups[name])} units)", method, row["own_agree"],
                      row["other_agree"] if name != "other" else "-", row["own_dld"],
                      row["other_dld"] if name != "other" else "-"] for (name, method), row in abl.items()]
    r = Report("EIS VII challenge 1: the CNN's labeling rule, recovered from its internals",
               subtitle=f"model {model_file.name}, hint {hint_file.name}, seed {seed}")
    r.numbers({"rule agrees with the network": rule_agree, "network accuracy vs the rule (test)": test_vs_rule,
               "PCA variance in 2 components": p.explained(2), "scrubbing agreement at 1%": at_1pct,
               "units in group a / b / dead": f"{len(groups['a'])} / {len(groups['b'])} / {len(dead)}"})
    r.section("The recovered rule")
    r.text(f"<b>{rule.describe()}</b>. {fit_note} The function below (numpy only) gives these labels; run on "
           f"the test set it agrees with the network on {source_agree:.4f} of the images.")
    r.code(source)
    r.section("How the network computes it")
    r.text(_mechanism(groups, acts, rh, v, abl, cut, rule))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].imshow(rendered, cmap="gray")
    axes[0].set_title(f"hint as published {rendered.shape[1]}x{rendered.shape[0]}", fontsize=9)
    axes[1].imshow(hint, cmap="gray", vmin=0, vmax=255)
    axes[1].set_title("decoded 28x28 digit", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")
    bins = np.linspace(score.min(), score.max(), 80)
    for lab, color in ((0, "tab:blue"), (1, "tab:orange")):
        axes[2].hist(score[labels_np == lab], bins=bins, alpha=0.6, color=color, label=f"network label {lab}")
    for b in (rule.lo, rule.hi):
        if b is not None:
            axes[2].axvline(b, color="k", ls="--", lw=1)
    axes[2].set_xlabel(f"similarity to {rule.template_name} ({rule.center}-centered)")
    axes[2].legend(fontsize=7)
    r.figure(fig, caption="The hint image, the digit decoded from it, and the network's labels against the "
                          "winning score (dashed: the fitted bounds).")
    r.section("Input scale")
    better = "pixels / 255" if rule_agree >= norm_agree else "MNIST normalization"
    r.text(f"The network reads images as pixels / 255 here. Under MNIST normalization it is more confident "
           f"({results['model_mean_confidence_if_inputs_normalized']:.3f} vs {results['model_mean_confidence']:.3f}) "
           f"but calls {results['model_label1_frac_if_inputs_normalized']:.2f} of the images 1 (vs "
           f"{results['model_label1_frac']:.2f}); the recovered rule explains the labels best under {better} "
           f"({max(rule_agree, norm_agree):.4f} vs {min(rule_agree, norm_agree):.4f}).")
    r.table(["inputs", "label-1 fraction", "mean confidence", "best rule agreement (same template)"],
            [["pixels / 255 (used)", results["model_label1_frac"], results["model_mean_confidence"], rule_agree],
             ["MNIST-normalized", results["model_label1_frac_if_inputs_normalized"],
              results["model_mean_confidence_if_inputs_normalized"], norm_agree]],
            caption="Which preprocessing the network was trained with: the one under which one sentence "
                    "explains its labels best.")
    r.section("Logit difference and direct logit attribution")
    r.text(f"The logit difference (class 1 minus class 0) is <code>fc1 . (fc2[1] - fc2[0]) + bias</code>; "
           f"per-unit direct logit attributions sum back to it (max error {dla_error:.2e}).")
    mean_dla = dla.mean(0).numpy()
    order = np.argsort(-np.abs(mean_dla))[:12]
    r.table(["unit", "weight on logit diff", "mean DLA", "mean |DLA|", "group"],
            [[int(u), float(v[u]), float(mean_dla[u]), float(dla[:, u].abs().mean()),
              next(k for k, m in groups.items() if int(u) in set(m.tolist()))] for u in order],
            caption="Units with the largest mean direct logit attribution.")
    r.section("PCA of fc1 and the arms")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(range(1, 11), p.ratio[:10].numpy())
    axes[0].set_xlabel("component")
    axes[0].set_ylabel("variance explained")
    axes[1].scatter(pcs[:, 0], pcs[:, 1], c=labels_np, s=2, cmap="coolwarm", alpha=0.5)
    origin2 = p.transform(arms.origin[None].to(p.mean.dtype), 2)[0].numpy()
    for a in range(2):
        tip = p.transform((arms.origin + arms.directions[a] * float(arm_pos[:, a].quantile(0.99)))[None], 2)[0].numpy()
        axes[1].annotate("", xy=tip, xytext=origin2, arrowprops={"arrowstyle": "->", "lw": 2})
        axes[1].text(*tip, f" arm {a}", fontsize=9)
    axes[1].set_xlabel("PC1")
    axes[1].set_ylabel("PC2")
    axes[1].set_title("fc1 activations, colored by the network's label", fontsize=9)
    r.figure(fig, caption=f"The first two components explain {p.explained(2):.3f} of the variance; the "
                          f"fitted arm directions (arrows) have weights {results['arm_logit_diff_weights']} on the "
                          "logit difference.")
    r.section("Feature visualization")
    r.figure(image_grid(fv_arms, [f"arm {a}" for a in range(2)], cols=2, size=2.0),
             caption="Inputs that maximize each arm direction.")
    order_units = torch.cat([groups["a"], groups["b"], groups["other"], dead]).tolist()
    gname = {int(u): k for k, m in groups.items() for u in m.tolist()}
    r.figure(image_grid(fv_units[order_units], [f"{u} {gname[u]}" for u in order_units]),
             caption="Inputs that maximize each fc1 unit's pre-activation, by group (a, b, other, dead: never "
                     "active on the data).")
    r.section("Rule search")
    if from_network:
        r.text(f"With the templates taken from the network alone (feature visualizations and extreme inputs "
               f"of the arms, no hint), the best rule uses <i>{from_network[0].template_name}</i> and agrees "
               f"on {from_network[0].agree:.4f}; the hint's template sharpens this to {rule.agree:.4f}.")
    r.figure(image_grid(np.stack([t / 255.0 for t in templates.values()]), list(templates), cols=6, size=1.6),
             caption="Candidate templates: the hint, its inverse, and for each arm its feature visualization "
                     f"and the mean of the {n_extreme} inputs furthest along it.")
    r.table(["template", "centering", "form", "lo", "hi", "agreement"],
            [[x.template_name, x.center, x.kind, x.lo if x.lo is not None else "-",
              x.hi if x.hi is not None else "-", x.agree] for x in rules[:12]],
            caption="Best rules per (template, centering), by agreement with the network's labels.")
    r.section("Unit groups and ablations")
    r.table(["group", "units", "mean act, high-score region", "mean act, low-score region", "mean weight on logit diff"],
            [[k, len(m), float(acts[rh][:, m].mean()) if len(m) and rh.any() else 0.0,
              float(acts[~rh][:, m].mean()) if len(m) and (~rh).any() else 0.0,
              float(v[m].mean()) if len(m) else 0.0] for k, m in groups.items()],
            caption=f"Units clustered by activation profile (k-means, 3 groups) plus dead units. The "
                    f"high-score region is score > {cut:.4g} ({region_hi.mean():.3f} of the inputs); group a "
                    "detects it, group b the low-score region.")
    same = [k for k in ("a", "b") if (k, "zero") in abl and abl[(k, "zero")] == abl[(k, "min")]]
    if same:
        r.text(f"For group{'s' if len(same) > 1 else ''} {' and '.join(same)} the dataset minimum of every unit is "
               "0 (they are silent on the other side), so zero and min ablation coincide.")
    r.table(["ablated", "method", "agreement, own region", "agreement, other region", "mean d(logit diff), own",
             "mean d(logit diff), other"], ablation_rows,
            caption="Zero and min (dataset minimum per unit) ablation of each group; the detector groups' "
                    "own region is the side of the score they fire on; for the other group, all inputs.")
    r.section("Causal scrubbing")
    r.text("Hypothesis: each group's activations depend only on the region of the input and its score. Each "
           "group is resampled from inputs of the same region whose score is within the tolerance (a fraction "
           "of the score's range); dead units are resampled freely.")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogx(list(tolerances), [c for c in curve.values()], "o-")
    ax.axhline(scrubbed[len(tolerances)].agree, color="gray", ls=":", label="same region only")
    ax.axhline(scrubbed[len(tolerances) + 1].agree, color="k", ls="--", label="everything free")
    ax.set_xlabel("tolerance (fraction of the score range)")
    ax.set_ylabel("agreement with the network")
    ax.legend(fontsize=8)
    r.figure(fig, caption="Fraction of the network's labels that survive scrubbing.")
    r.table(["setting", "agreement", "95% interval", "unmatched draws"],
            [[h.name, s.agree, f"{s.agree_ci[0]:.4f} to {s.agree_ci[1]:.4f}", s.unmatched]
             for h, s in zip(hyps, scrubbed)], caption=f"{n_draws} draws each.")
    return r


def _headline(res: dict[str, Any]) -> list[str]:
    """The lines ``run`` always prints, from the results."""
    def nan_get(k: str) -> float:
        return res.get(k, float("nan"))

    return ["recovered rule:", res["rule_source"],
            f"rule agrees with the network on {res['rule_agree']:.4f} of {res['n_fit_images']} images "
            f"(network accuracy against the rule on the test set: {res['model_test_acc_vs_rule']:.4f})",
            f"groups: a {res['n_units_group_a']}, b {res['n_units_group_b']}, other {res['n_units_other']}, "
            f"dead {res['n_units_dead']}; "
            f"min-ablating a: own region {nan_get('min_ablate_own_region_agree_a'):.3f}, "
            f"other {nan_get('min_ablate_other_region_agree_a'):.3f}; "
            f"b: own {nan_get('min_ablate_own_region_agree_b'):.3f}, "
            f"other {nan_get('min_ablate_other_region_agree_b'):.3f}",
            f"causal scrubbing agreement at 1% tolerance: {res['scrub_agree_at_1pct']:.4f}; curve "
            f"{', '.join(f'{k}: {v_:.3f}' for k, v_ in res['scrub_curve'].items())}"]


@numerics()
def run(
    out_dir: PathLike,
    data_dir: PathLike | None = None,
    model_path: PathLike | None = None,
    hint_path: PathLike | None = None,
    seed: int = FULL.seed,
    n_draws: int = FULL.n_draws,
    featviz_steps: int = FULL.featviz_steps,
    n_extreme: int = FULL.n_extreme,
    max_train: int = FULL.max_train,
    tolerances: tuple[float, ...] = TOLERANCES,
    quiet: bool = False,
    device: str = "auto",
    dtype: str = "float32",
) -> dict[str, Any]:
    """Run the study; writes ``out_dir/results.json`` and ``out_dir/report.html``; returns the results.

    ``n_draws``: random draws per scrubbing setting; ``featviz_steps``: optimization steps of
    the feature visualizations; ``n_extreme``: inputs averaged into an arm's extreme template;
    ``max_train``: at most this many MNIST training images are used when the data directory
    has the training set (the rule is then fitted on them and checked on the test set).
    The network runs (forward passes, feature visualisation, ablations, scrubbing) on ``device`` in
    ``dtype``; activations are analysed on the host (both recorded in results.json).
    """
    t_start = time.perf_counter()
    placement = Placement(device, dtype)
    say = (lambda *a: None) if quiet else print
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)

    # -- inputs ----------------------------------------------------------------------------
    model_file = Path(model_path) if model_path is not None else data.data_file(MODEL_FILE, data_dir)
    net = placement.apply(ConvNet.from_file(model_file))
    hint_file = Path(hint_path) if hint_path is not None else data.data_file(HINT_FILE, data_dir)
    rendered = load_image(hint_file)
    hint = decode_hint(rendered)  # blocky or smooth, any size, framed, colour-mapped
    test_x, test_y = load_mnist("test", data_dir)
    if has_split("train", data_dir):
        train_x = load_mnist("train", data_dir)[0]
        pick = torch.randperm(len(train_x), generator=g)[:max_train].sort().values.numpy()
        fit_x = train_x[pick]
        fit_note = (f"The rule is fitted on {len(fit_x)} MNIST training images and checked on the "
                    f"{len(test_x)} test images.")
    else:
        fit_x = test_x
        fit_note = ("The MNIST training set is not in the data directory, so the rule is fitted and "
                    f"evaluated on the {len(test_x)} test images.")
    say(fit_note)
    X = pixels_to_input(fit_x)
    # every intervention below acts at fc1 or later: run them on the fc head from cached pool2 values
    pool2 = site_values(net, X, "hook_pool2")
    head = net.head()
    with torch.no_grad():
        logits = to_host(head(pool2))
    labels = logits.argmax(-1)
    labels_np = labels.numpy()
    test_labels = labels_np if fit_x is test_x else _labels(net, test_x)
    acts = to_host(site_values(head, pool2, SITE))
    d_fc = acts.shape[1]
    timings = {"load": time.perf_counter() - t_start}

    # -- input scale check: [0, 1] vs MNIST-normalized -------------------------------------
    with torch.no_grad():
        probs = logits.softmax(-1)
        probs_norm = to_host(net(mnist.normalize(X))).softmax(-1)

    # -- logit difference and direct logit attribution ---------------------------------------
    W = to_host(net.fc2.weight).T  # [d_fc, 2]
    v = logit_diff_direction(W, pos=1, neg=0)
    dla = direct_logit_attribution(acts, v)
    ld = logit_diff(logits)
    dla_error = float((dla.sum(1) + logit_diff_bias(to_host(net.fc2.bias)) - ld).abs().max())

    # -- PCA and arms ------------------------------------------------------------------------
    p = pca(acts)
    pcs = p.transform(acts, 2).float().numpy()
    # -- arms, their feature visualizations and extreme inputs: the network's own templates -----
    found = arm_templates(net, SITE, acts, fit_x, n_arms=2, n_extreme=n_extreme, featviz_steps=featviz_steps,
                          seed=seed, quiet=quiet)
    arms, arm_pos, fv_arms = found.arms, found.positions, found.featviz
    timings["pca_arms"] = time.perf_counter() - t_start - sum(timings.values())

    # -- feature visualization of every unit ------------------------------------------------
    # units through their pre-activation (a ReLU unit that is off at the start has no gradient)
    fv_units = to_host(visualize(net, PRE_SITE, unit_directions(d_fc), steps=featviz_steps, n_starts=1, seed=seed,
                                 quiet=quiet)).numpy()
    timings["featviz"] = time.perf_counter() - t_start - sum(timings.values())

    # -- candidate templates and the rule search --------------------------------------------
    templates: dict[str, np.ndarray] = {"hint": hint, "hint inverse": 255 - hint, **found.templates}
    rules = search_rules(fit_x, labels_np, templates)
    rule = rules[0]
    from_network = [x for x in rules if not x.template_name.startswith("hint")]
    rule_agree = float((rule.predict(fit_x) == labels_np).mean())
    test_vs_rule = float((rule.predict(test_x) == test_labels).mean())
    source = rule.source()
    source_agree = source_agreement(source, test_x, test_labels)  # the printed source gives the same labels
    # the same template under MNIST-normalized inputs, thresholds refitted
    labels_norm = probs_norm.argmax(-1).numpy()
    norm_agree = fit_score_rule(rule.scores(fit_x), labels_norm)[3]
    timings["rule_search"] = time.perf_counter() - t_start - sum(timings.values())

    # -- unit groups and regions -------------------------------------------------------------
    score = rule.scores(fit_x)
    region_hi, cut = rule.regions(score)
    gid = group_units(acts, n_groups=3, seed=seed)
    rh = torch.as_tensor(region_hi)
    groups = groups_by_selectivity(acts, gid, rh)  # a: detectors of the high-score side, b: of the low side
    dead = groups["dead"]

    # -- ablations per group, split by region ------------------------------------------------
    abl = ablate_by_region(head, pool2, SITE, {"a": (groups["a"], rh), "b": (groups["b"], ~rh),
                                               "other": (groups["other"], torch.ones_like(rh))}, reference=acts)
    timings["groups_ablation"] = time.perf_counter() - t_start - sum(timings.values())

    # -- causal scrubbing of the group hypothesis ---------------------------------------------
    span = float(score.max() - score.min()) or 1.0
    score_n = torch.as_tensor((score - score.min()) / span)
    key = rh.long()

    same, free = {k: groups[k] for k in ("a", "b", "other")}, {"dead": dead}
    hyps = [grouped_hypothesis(SITE, same, key, score_n, t, free, name=f"tol={t:g}") for t in tolerances]
    hyps += [grouped_hypothesis(SITE, same, key, free=free, name="same region only"),
             Hypothesis(SITE, groups=(), name="everything free")]
    scrubbed = scrub_many(head, hyps, pool2, n_draws=n_draws, seed=seed, quiet=quiet)
    curve = {f"{t:g}": r.agree for t, r in zip(tolerances, scrubbed)}
    at_1pct = next((r.agree for t, r in zip(tolerances, scrubbed) if abs(t - 0.01) < 1e-12), float("nan"))
    timings["scrub"] = time.perf_counter() - t_start - sum(timings.values())

    # -- results ---------------------------------------------------------------------------
    results = _results(rule=rule, source=source, rule_agree=rule_agree, test_vs_rule=test_vs_rule, source_agree=source_agree,
                       from_network=from_network, norm_agree=norm_agree, fit_x=fit_x, test_x=test_x, test_y=test_y,
                       test_labels=test_labels, labels=labels, probs=probs, probs_norm=probs_norm,
                       labels_norm=labels_norm, dla_error=dla_error, p=p, arms=arms, v=v, groups=groups, cut=cut,
                       region_hi=region_hi, at_1pct=at_1pct, curve=curve, scrubbed=scrubbed, n_tol=len(tolerances),
                       seed=seed, abl=abl)

    # -- report -----------------------------------------------------------------------------
    r = _report(model_file=model_file, hint_file=hint_file, seed=seed, results=results, rule=rule, rules=rules,
                from_network=from_network, fit_note=fit_note, rendered=rendered, hint=hint, score=score,
                labels_np=labels_np, norm_agree=norm_agree, dla=dla, v=v, groups=groups, acts=acts, rh=rh, abl=abl,
                p=p, pcs=pcs, arms=arms, arm_pos=arm_pos, fv_arms=fv_arms, fv_units=fv_units, templates=templates,
                n_extreme=n_extreme, tolerances=tolerances, hyps=hyps, scrubbed=scrubbed, n_draws=n_draws)
    timings["total"] = time.perf_counter() - t_start
    results["wall_time_s"] = timings["total"]
    results.update(placement.record())
    r.text("Wall time per stage (s): " + ", ".join(f"{k} {v_:.1f}" for k, v_ in timings.items()))
    report_path = r.save(out / "report.html")
    write_results(out, results)

    announce(_headline(results), report_path)
    return results


cli = study_command(
    Settings, run, {"full": FULL, "quick": QUICK}, out_default=Path("runs/eis-cnn"),
    doc="Recover the EIS VII challenge 1 labeling rule from the CNN's internals and test it causally.",
    extra=[parameter("data_dir", Path, None, "Data directory (default: $INTERPLAB_DATA or ../shared/data)."),
           parameter("model_path", Path, None, "A state dict of the challenge architecture (default: "
                     "eis-vii/mnist_model.pt in the data directory).", flag="--model"),
           parameter("hint_path", Path, None, "The hint image (default: eis-vii/mnist_example.png in the data "
                     "directory).", flag="--hint")])



__all__ = ["run", "cli", "SITE", "TOLERANCES"]
