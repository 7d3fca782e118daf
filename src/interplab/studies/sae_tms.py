"""SAEs recover the known features of a toy model of superposition, once wide enough.

A toy model of superposition (``n_features`` sparse features squeezed into ``n_hidden``
dimensions) is trained with the sparse-features objective; its hidden layer ``hook_hidden`` is
a superposition whose dictionary is known: the columns of ``W``. Sparse autoencoders of
several widths and L1 coefficients are trained on that layer, each scored by the mean max
cosine similarity (MMCS) of its decoder rows with the represented columns of ``W``. Below the
true number of features MMCS is capped (some features have no atom); once the width passes it,
MMCS jumps to about 1: the cliff.

Results (``results.json``): ``mmcs`` (the best run at the true width), ``width_sweep`` (width ->
best MMCS over L1), ``l0`` (that best run's L0), ``mmcs_grid`` (L1 -> MMCS per width).
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Any, Optional

import torch

from interplab.devices import Placement
from interplab.options import setting, study_command
from interplab.errors import check
from interplab.instrument import Site
from interplab.io import PathLike, write_results
from interplab.report import Report, announce
from interplab.sae.metrics import enc_dec_cosine, feature_density, l0, mmcs, variance_explained
from interplab.sae.model import SAE, SAEConfig
from interplab.numerics import numerics
from interplab.sae.train import SAETrainConfig, make_buffer, train_sae_or_resume

REPRESENTED = 0.5  # a feature counts as represented when its column of W has at least this norm


@dataclass(frozen=True)
class Settings:
    """What the study can be asked to change (``FULL`` and ``QUICK`` below)."""

    n_features: int = setting(16, "Features of the toy model.", ge=2, le=100_000)
    n_hidden: int = setting(8, "Hidden dimensions of the toy model.", ge=1, le=100_000)
    sparsity: float = setting(0.95, "Probability that a feature is zero.", ge=0, lt=1)
    tms_epochs: int = setting(50, "Epochs (100 batches each) for the toy model.", ge=1)
    widths: Optional[tuple[int, ...]] = setting(None, "Comma-separated SAE widths (default: 1/4 to 2 times "
                                                "n_features).", ge=1, le=1 << 20)
    l1_values: tuple[float, ...] = setting((0.1, 0.3, 1.0), "Comma-separated L1 coefficients.", ge=0, le=1e6,
                                           flag="--l1")
    steps: int = setting(2000, "Training steps per SAE.", ge=1)
    batch_size: int = setting(256, "Activation rows per SAE step.", ge=1, le=1 << 20)
    seed: int = setting(0, "Seed for the toy model, the SAEs and the data.", ge=0)


FULL = Settings()
QUICK = Settings(tms_epochs=20, steps=600)


def train_tms(out: Path, n_features: int, n_hidden: int, sparsity: float, epochs: int, seed: int,
              quiet: bool, placement: Placement | None = None) -> tuple[torch.nn.Module, Any]:
    """Train (or resume) the toy model with the sparse-features objective; returns (model, objective).

    Example:
        >>> import tempfile
        >>> m, obj = train_tms(Path(tempfile.mkdtemp()), 4, 2, 0.9, 1, 0, True)
        >>> m.W.shape
        torch.Size([1, 2, 4])
    """
    from interplab.models import TMSConfig, ToyModelOfSuperposition
    from interplab.tasks.superposition import SparseFeatures
    from interplab.train import TrainConfig, train_or_resume

    model = ToyModelOfSuperposition(TMSConfig(n_instances=1, n_features=n_features, n_hidden=n_hidden), seed=seed)
    if placement is not None:
        placement.apply(model)
    objective = SparseFeatures(n_instances=1, n_features=n_features, sparsity=sparsity, importance=1.0, seed=seed)
    model_dir = out / "tms"
    cfg = TrainConfig(epochs=epochs, lr=1e-3, weight_decay=0.0, batch_size=1024, seed=seed, log_every=10,
                      checkpoint_every=max(1, epochs // 2), keep_history=False)
    train_or_resume(model, objective, cfg, model_dir, quiet=quiet)
    return model.eval(), objective


@numerics()
def run(
    out_dir: PathLike,
    n_features: int = FULL.n_features,
    n_hidden: int = FULL.n_hidden,
    sparsity: float = FULL.sparsity,
    tms_epochs: int = FULL.tms_epochs,
    widths: Optional[tuple[int, ...]] = FULL.widths,
    l1_values: tuple[float, ...] = FULL.l1_values,
    steps: int = FULL.steps,
    batch_size: int = FULL.batch_size,
    seed: int = FULL.seed,
    quiet: bool = False,
    device: str = "auto",
    dtype: str = "float32",
) -> dict[str, Any]:
    """Run the study into ``out_dir``; returns the results dict (see the module docstring).

    The toy model and the SAEs train on ``device`` in ``dtype``; the comparisons run on the CPU in float32.

    ``widths`` defaults to 1/4, 1/2, 3/4, 1, 3/2 and 2 times ``n_features``.

    Example (tiny; the defaults take a few minutes):
        >>> import tempfile
        >>> r = run(tempfile.mkdtemp(), n_features=6, n_hidden=3, tms_epochs=2, widths=(3, 6), l1_values=(0.3,),
        ...         steps=50, quiet=True)  # doctest: +ELLIPSIS
        sae-tms: ...
        >>> sorted(r["width_sweep"]), 0 <= r["mmcs"] <= 1
        (['3', '6'], True)
    """
    check(0 <= sparsity < 1, f"sparsity must be in [0, 1), got {sparsity}.")
    widths = tuple(widths) if widths else tuple(sorted({max(1, round(n_features * f)) for f in (0.25, 0.5, 0.75, 1, 1.5, 2)}))
    check(all(w >= 1 for w in widths), "widths must be positive.")
    check(len(l1_values) >= 1 and all(v > 0 for v in l1_values), "l1_values must be positive numbers.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    placement = Placement(device, dtype)
    model, objective = train_tms(out, n_features, n_hidden, sparsity, tms_epochs, seed, quiet, placement)
    W = model.W.detach()[0].float().cpu()  # [n_hidden, n_features]: column j is feature j's direction
    norms = W.norm(dim=0)
    represented = norms >= REPRESENTED
    true = W.T[represented]  # the known dictionary, one row per represented feature
    n_true = int(represented.sum())
    check(n_true > 0, "The toy model represents no feature; train it longer or make the features sparser.")
    site = Site("hook_hidden", position=0)
    eval_x = objective.sample(torch.Generator().manual_seed(seed + 1), 8192)
    with torch.no_grad():
        _, cache = model.run_with_cache(eval_x.to(model.W), names_filter="hook_hidden")
    acts = site.read(cache["hook_hidden"]).float().cpu()

    grid: dict[str, dict[str, float]] = {}
    runs: list[dict[str, Any]] = []
    for c in l1_values:
        grid[f"{c:g}"] = {}
        for width in widths:
            cfg = SAETrainConfig(steps=steps, batch_size=batch_size, lr=3e-3, l1_coeff=c, buffer_size=8192,
                                 model_batch=2048, seed=seed, log_every=max(1, steps // 4), checkpoint_every=steps)
            sae = placement.apply(SAE(SAEConfig(d_in=n_hidden, d_sae=width, hook_name=site.name, position=0), seed=seed))
            sae_dir = out / "saes" / f"w{width}_l1_{c:g}"
            train_sae_or_resume(sae, make_buffer(model, site, objective.sample, cfg), cfg, sae_dir, quiet=True)
            sae.to(device="cpu", dtype=torch.float32)
            with torch.no_grad():
                f = sae.encode(acts)
                x_hat = sae.decode(f)
            score = mmcs(sae.W_dec.detach(), true)
            grid[f"{c:g}"][str(width)] = score
            runs.append({"width": width, "l1": c, "mmcs": score, "l0": l0(f), "variance_explained":
                         variance_explained(acts, x_hat), "dead": int((feature_density(f) == 0).sum()),
                         "enc_dec_cosine": enc_dec_cosine(sae).mean().item()})
            if not quiet:
                print(f"  width {width}, l1 {c:g}: MMCS {score:.4f}, L0 {runs[-1]['l0']:.2f}")
    width_sweep = {str(w): max(grid[f"{c:g}"][str(w)] for c in l1_values) for w in widths}
    at_true = [r for r in runs if r["width"] == n_true] or [min(runs, key=lambda r: (abs(r["width"] - n_true), -r["width"]))]
    best = max(at_true, key=lambda r: r["mmcs"])
    results = {"mmcs": best["mmcs"], "l0": best["l0"], "best_l1": best["l1"], "true_width": n_true,
               "n_features": n_features, "n_hidden": n_hidden, "sparsity": sparsity,
               "true_l0": (eval_x[:, 0] > 0).float().sum(-1).mean().item(),
               "width_sweep": width_sweep, "mmcs_grid": grid, "feature_norms": norms.tolist()}
    write_results(out, results)
    path = _report(out, results, runs, W, widths, l1_values)
    announce(f"sae-tms: MMCS {best['mmcs']:.4f} at the true width {n_true} (l1 {best['l1']:g}, L0 {best['l0']:.2f}); "
             f"width sweep: " + ", ".join(f"{w}: {v:.3f}" for w, v in width_sweep.items()), path)
    return results


def _report(out: Path, results: dict[str, Any], runs: list[dict[str, Any]], W: torch.Tensor,
            widths: tuple[int, ...], l1_values: tuple[float, ...]) -> Path:
    import matplotlib.pyplot as plt

    n_true = results["true_width"]
    r = Report("SAEs recover the features of a toy model of superposition",
               subtitle=f"{results['n_features']} features in {results['n_hidden']} dimensions, sparsity "
                        f"{results['sparsity']}")
    r.numbers({"MMCS at the true width": results["mmcs"], "true width (represented features)": n_true,
               "L0 of that SAE": results["l0"], "true L0": results["true_l0"]})
    r.section("The cliff: MMCS against SAE width")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for c in l1_values:
        ax.plot(widths, [results["mmcs_grid"][f"{c:g}"][str(w)] for w in widths], "o-", label=f"l1 {c:g}")
    ax.axvline(n_true, color="gray", ls="--", lw=1)
    ax.text(n_true, ax.get_ylim()[0], " true number of features", color="gray", fontsize=8, va="bottom")
    ax.set_xlabel("SAE width (features)")
    ax.set_ylabel("MMCS with the true dictionary")
    ax.legend(fontsize=8)
    r.figure(fig, caption="Mean over the true features of the best cosine with any learned decoder row.")
    r.table(["l1"] + [str(w) for w in widths],
            [[f"{c:g}"] + [results["mmcs_grid"][f"{c:g}"][str(w)] for w in widths] for c in l1_values],
            caption="MMCS per L1 coefficient (rows) and width (columns).")
    r.section("All runs")
    r.table(["width", "l1", "MMCS", "L0", "variance explained", "dead", "mean cos(enc, dec)"],
            [[x["width"], x["l1"], x["mmcs"], x["l0"], x["variance_explained"], x["dead"], x["enc_dec_cosine"]]
             for x in runs])
    r.section("The toy model")
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(range(W.shape[1]), W.norm(dim=0).numpy())
    ax.axhline(REPRESENTED, color="gray", ls="--", lw=1)
    ax.set_xlabel("feature")
    ax.set_ylabel("||W_i||")
    r.figure(fig, caption=f"Feature norms; features above {REPRESENTED} count as represented and form the true dictionary.")
    return r.save(out / "report.html")


cli = study_command(Settings, run, {"full": FULL, "quick": QUICK},
                    doc="SAEs recover the known features of a toy model of superposition, once wide enough.")



__all__ = ["run", "cli", "train_tms"]
