"""Toy models of superposition: geometry by sparsity, phase diagram, sticky dimensionality, finite data.

Reproduces four pictures of Elhage et al. (2022) and Henighan et al. (2023) with ReLU-output
toy models, every setting trained as instances of one model:

1. five features of importance ``0.9^i`` in two dimensions, at several sparsities: the
   directions ``W_i`` and their named geometry (orthogonal, antipodal pairs, pentagon);
2. two features in one dimension over sparsity x relative importance: is the second feature
   absent, given the dimension, or sharing it as an antipodal pair;
3. many features of equal importance: dimensions per feature against ``1/(1-S)`` and the
   values where it sticks;
4. finite datasets of ``T`` normalised points: hidden vectors of the data points against those
   of the features as ``T`` grows.

Each setting is trained with several initialisations (restarts) and the lowest-loss one is
analysed. Writes ``results.json`` (``geometry_s0`` ... ``geometry_s0p97``, ``phase_diagram``,
``plateaus``, ...), ``report.html`` and one training run per experiment under ``runs/``.

Example (the command line):
    interplab study tms --out runs/tms --quick
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interplab.analysis import superposition as sp
from interplab.devices import Placement
from interplab.errors import check
from interplab.io import read_json, write_results
from interplab.models import TMSConfig, ToyModelOfSuperposition
from interplab.models.base import model_config_dict
from interplab.report import Report, announce
from interplab.options import parameter, setting, study_command
from interplab.tasks.superposition import SparseFeatures
from interplab.numerics import numerics
from interplab.train import TrainConfig, TrainResult, train_or_resume


@dataclass(frozen=True)
class Settings:
    """Sizes of the four experiments (``FULL`` and ``QUICK`` below)."""

    # 1. n=5 features, m=2 dimensions, importance 0.9^i
    geometry_sparsity: tuple[float, ...] = setting((0.0, 0.7, 0.8, 0.9, 0.97), "Geometry: Feature sparsities.", ge=0, lt=1)
    geometry_restarts: int = setting(8, "Geometry: Restarts per sparsity.", ge=1, le=1000)
    geometry_steps: int = setting(2000, "Geometry: Training steps.", ge=1)
    geometry_batch: int = setting(1024, "Geometry: Batch size.", ge=1, le=1 << 20)
    # 2. n=2, m=1 phase diagram: density 1 .. phase_min_density, importance 0.1 .. 10
    phase_grid: int = setting(20, "Phase diagram: Grid points per axis.", ge=2, le=1000)
    phase_min_density: float = setting(0.01, "Phase diagram: Smallest feature density.", gt=0, lt=1)
    phase_restarts: int = setting(6, "Phase diagram: Restarts per grid point.", ge=1, le=1000)
    phase_steps: int = setting(1000, "Phase diagram: Training steps.", ge=1)
    phase_batch: int = setting(128, "Phase diagram: Batch size.", ge=1, le=1 << 20)
    # 3. dimensions per feature, uniform importance, 1/(1-S) from 1 to dim_max_inv_density
    dim_features: int = setting(200, "Dimensionality: Features.", ge=2, le=100_000)
    dim_hidden: int = setting(20, "Dimensionality: Hidden dimensions.", ge=1, le=100_000)
    dim_points: int = setting(20, "Dimensionality: Sparsity values.", ge=2, le=1000)
    dim_max_inv_density: float = setting(20.0, "Dimensionality: Largest 1/(1-S).", gt=1, le=1e6)
    dim_steps: int = setting(1500, "Dimensionality: Training steps.", ge=1)
    dim_batch: int = setting(256, "Dimensionality: Batch size.", ge=1, le=1 << 20)
    dim_lr: float = setting(1e-2, "Dimensionality: Learning rate.", gt=0, le=10)
    # 4. finite datasets of T points
    finite_features: int = setting(20, "Finite data: Features.", ge=2, le=100_000)
    finite_sparsity: float = setting(0.9, "Finite data: Feature sparsity.", ge=0, lt=1)
    finite_T: tuple[int, ...] = setting((3, 5, 8, 12, 20, 50, 100, 300, 1000, 3000), "Finite data: Dataset sizes.", ge=1,
                                        le=10_000_000)
    finite_steps: int = setting(3000, "Finite data: Training steps.", ge=1)
    finite_batch: int = setting(1024, "Finite data: Batch size.", ge=1, le=1 << 20)
    finite_weight_decay: float = setting(0.1, "Finite data: Weight decay.", ge=0, le=1e3)
    steps_per_epoch: int = setting(100, "Optimizer steps per epoch of the training loop.", ge=1)


FULL = Settings()
QUICK = Settings(
    geometry_steps=1000, geometry_batch=512,
    phase_grid=12, phase_steps=500,
    dim_features=100, dim_hidden=10, dim_points=16, dim_max_inv_density=8.0, dim_steps=1000,
    finite_T=(3, 5, 20, 100, 1000), finite_steps=1500,
)


def _key(sparsity: float) -> str:
    """``geometry_s0``, ``geometry_s0p97``, ... for a sparsity."""
    return "geometry_s" + format(sparsity, "g").replace(".", "p")


def _fit(model: ToyModelOfSuperposition, objective: SparseFeatures, cfg: TrainConfig, run_dir: Path,
         quiet: bool, placement: Placement | None = None) -> TrainResult:
    """Train into ``run_dir`` on ``placement``'s device and dtype (or reuse and finish a run there made with
    the same settings); the model comes back on the CPU in float32 for the analysis."""
    if placement is not None:
        placement.apply(model)
    result = train_or_resume(model, objective, cfg, run_dir, quiet=quiet)
    model.to(device="cpu", dtype=torch.float32)
    return result


def _config(steps: int, s: Settings, lr: float, seed: int, batch: int, weight_decay: float = 0.0) -> TrainConfig:
    epochs = max(1, steps // s.steps_per_epoch)
    return TrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), batch_size=batch,
                       schedule="cosine", seed=seed, log_every=max(1, epochs // 10), checkpoint_every=epochs,
                       keep_history=False)


# -- 1. five features in two dimensions ----------------------------------------------------------
def geometry_by_sparsity(s: Settings, runs: Path, seed: int, quiet: bool,
                         placement: Placement | None = None) -> dict[str, Any]:
    """Train n=5, m=2 at each sparsity (with restarts); name the best instance's geometry."""
    R, n = s.geometry_restarts, 5
    sparsity = [v for v in s.geometry_sparsity for _ in range(R)]
    obj = SparseFeatures(len(sparsity), n, sparsity=sparsity, importance=[0.9**i for i in range(n)],
                         eval_batch=8192, steps_per_epoch=s.steps_per_epoch, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(len(sparsity), n, 2), seed=seed)
    _fit(model, obj, _config(s.geometry_steps, s, 1e-2, seed, s.geometry_batch), runs / "geometry", quiet, placement)
    W = model.W.detach()
    best = obj.best_instances(model, R)
    names = sp.classify_geometry(W)
    # the control: a linear-output model (no ReLU) at the same sparsities, 2 initialisations each
    lin_sparsity = [v for v in s.geometry_sparsity for _ in range(2)]
    lin_obj = SparseFeatures(len(lin_sparsity), n, sparsity=lin_sparsity, importance=[0.9**i for i in range(n)],
                             eval_batch=8192, steps_per_epoch=s.steps_per_epoch, seed=seed)
    linear = ToyModelOfSuperposition(TMSConfig(len(lin_sparsity), n, 2, relu_output=False), seed=seed)
    _fit(linear, lin_obj, _config(s.geometry_steps, s, 1e-2, seed, s.geometry_batch), runs / "geometry_linear", quiet,
         placement)
    W_lin = linear.W.detach()[lin_obj.best_instances(linear, 2)]
    return {"sparsity": list(s.geometry_sparsity), "W": W[best], "names": [names[i] for i in best],
            "all_names": [names[k * R:(k + 1) * R] for k in range(len(s.geometry_sparsity))],
            "W_all": W, "D": sp.feature_dimensionality(W[best]), "norms": sp.feature_norms(W[best]),
            "W_linear": W_lin, "linear_names": sp.classify_geometry(W_lin)}


# -- 2. phase diagram --------------------------------------------------------------------------------
def phase_diagram(s: Settings, runs: Path, seed: int, quiet: bool,
                  placement: Placement | None = None) -> dict[str, Any]:
    """n=2, m=1 over density x relative importance of feature 2; classify feature 2 per cell."""
    G, R = s.phase_grid, s.phase_restarts
    density = torch.logspace(0, torch.log10(torch.tensor(s.phase_min_density)).item(), G)
    importance = torch.logspace(-1, 1, G)
    sparsity = (1 - density).clamp_min(0).tolist()
    cell_s = [sparsity[j] for i in range(G) for j in range(G) for _ in range(R)]
    cell_i = [[1.0, importance[i].item()] for i in range(G) for j in range(G) for _ in range(R)]
    obj = SparseFeatures(len(cell_s), 2, sparsity=cell_s, importance=cell_i, eval_batch=4096,
                         steps_per_epoch=s.steps_per_epoch, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(len(cell_s), 2, 1), seed=seed)
    _fit(model, obj, _config(s.phase_steps, s, 1e-2, seed, s.phase_batch), runs / "phase", quiet, placement)
    best = obj.best_instances(model, R)
    phases = sp.classify_phase(model.W.detach()[best])
    cells = [phases[i * G:(i + 1) * G] for i in range(G)]
    return {"sparsity": [round(v, 6) for v in sparsity], "importance": [round(v, 6) for v in importance.tolist()],
            "cells": cells}


# -- 3. dimensionality -------------------------------------------------------------------------------
def dimensionality(s: Settings, runs: Path, seed: int, quiet: bool,
                   placement: Placement | None = None) -> dict[str, Any]:
    """Uniform importance, many features: dimensions per feature and D_i against 1/(1-S)."""
    inv_density = torch.logspace(0, torch.log10(torch.tensor(s.dim_max_inv_density)).item(), s.dim_points)
    sparsity = (1 - 1 / inv_density).clamp_min(0).tolist()
    obj = SparseFeatures(s.dim_points, s.dim_features, sparsity=sparsity, importance=1.0, eval_batch=512,
                         steps_per_epoch=s.steps_per_epoch, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(s.dim_points, s.dim_features, s.dim_hidden), seed=seed)
    _fit(model, obj, _config(s.dim_steps, s, s.dim_lr, seed, s.dim_batch), runs / "dimensionality", quiet, placement)
    W = model.W.detach()
    dpf = sp.dimensions_per_feature(W)
    return {"inv_density": inv_density.tolist(), "dims_per_feature": dpf.tolist(),
            "D": sp.feature_dimensionality(W), "plateaus": sp.find_plateaus(inv_density, dpf)}


# -- 4. finite datasets --------------------------------------------------------------------------------
def finite_data(s: Settings, runs: Path, seed: int, quiet: bool,
                placement: Placement | None = None) -> dict[str, Any]:
    """One instance per dataset size T: hidden vectors of features and of the training points."""
    T = list(s.finite_T)
    obj = SparseFeatures(len(T), s.finite_features, sparsity=s.finite_sparsity, importance=1.0, n_samples=T,
                         normalize=True, eval_batch=1024, steps_per_epoch=s.steps_per_epoch, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(len(T), s.finite_features, 2), seed=seed)
    cfg = _config(s.finite_steps, s, 1e-2, seed, s.finite_batch, weight_decay=s.finite_weight_decay)
    _fit(model, obj, cfg, runs / "finite", quiet, placement)
    W = model.W.detach()
    H = [sp.hidden_vectors(W[k], obj.dataset(k)) for k in range(len(T))]
    feature_D = sp.feature_dimensionality(W)
    data_D = [sp.feature_dimensionality(h) for h in H]
    return {"T": T, "W": W, "H": H, "feature_D": feature_D, "data_D": data_D,
            "train_loss": obj.dataset_losses(model).tolist(),
            "test_loss": obj.instance_losses(model, obj.eval_x).tolist()}


# -- the study -------------------------------------------------------------------------------------------
@numerics()
def run(out_dir: str | Path, quick: bool = False, seed: int = 0, quiet: bool = False,
        settings: Settings | None = None, device: str = "auto", dtype: str = "float32") -> dict[str, Any]:
    """Run the four experiments, write ``results.json`` and ``report.html``; return the results.

    The toy models train on ``device`` in ``dtype`` (recorded in results.json); the analysis of the
    trained weights runs on the CPU in float32.
    """
    s = settings or (QUICK if quick else FULL)
    placement = Placement(device, dtype)
    out = Path(out_dir)
    runs = out / "runs"
    t0 = time.perf_counter()
    # These models are small: one thread does the work, and on a busy machine more threads
    # mostly wait for each other (measured on a loaded 2-core machine: 2 threads took over
    # 10x the CPU time of 1 for the same steps).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        geo = geometry_by_sparsity(s, runs, seed, quiet, placement)
        phase = phase_diagram(s, runs, seed, quiet, placement)
        dim = dimensionality(s, runs, seed, quiet, placement)
        fin = finite_data(s, runs, seed, quiet, placement)
    finally:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {_key(v): name for v, name in zip(geo["sparsity"], geo["names"])}
    results["geometry_sparsity"] = geo["sparsity"]
    results["linear_geometry"] = geo["linear_names"]
    results["phase_diagram"] = phase
    results["plateaus"] = dim["plateaus"]
    results["inv_density"] = [round(v, 4) for v in dim["inv_density"]]
    results["dims_per_feature"] = [round(v, 4) for v in dim["dims_per_feature"]]
    results["finite_T"] = fin["T"]
    results["finite_feature_geometry"] = [sp.classify_geometry(w) for w in fin["W"]]
    results["finite_datapoint_geometry"] = [sp.classify_geometry(h) for h in fin["H"]]
    results["finite_feature_dim_max"] = [round(float(d.max()), 4) for d in fin["feature_D"]]
    results["finite_datapoint_dim_max"] = [round(float(d.max()), 4) for d in fin["data_D"]]
    results["finite_test_loss"] = [round(v, 6) for v in fin["test_loss"]]
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results.update(placement.record())
    write_results(out, results)
    path = _report(out, s, quick, seed, results, geo, phase, dim, fin)
    counts = {p: sum(row.count(p) for row in phase["cells"]) for p in sp.PHASES}
    announce([*(f"S={v:g}: {name}" for v, name in zip(geo["sparsity"], geo["names"])),
              "phase diagram cells: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v),
              f"plateaus of dimensions per feature: {results['plateaus']}",
              f"finite data, T = {fin['T']}: data points {results['finite_datapoint_geometry']}"], path)
    return results


def _report(out: Path, s: Settings, quick: bool, seed: int, results: dict[str, Any], geo: dict[str, Any],
            phase: dict[str, Any], dim: dict[str, Any], fin: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    r = Report("Toy models of superposition",
               subtitle=f"ReLU-output toy models, every setting trained as instances of one model "
                        f"({'quick' if quick else 'full'} settings, seed {seed}).")
    r.numbers({**{f"S={v:g}": name for v, name in zip(geo["sparsity"], geo["names"])},
               "plateaus": ", ".join(f"{p:.3g}" for p in results["plateaus"]) or "none",
               "seconds": results["seconds"]})

    r.section("1. Five features in two dimensions")
    r.text(f"n=5 features with importance 0.9<sup>i</sup> (yellow = least important) in m=2 dimensions; "
           f"{s.geometry_restarts} initialisations per sparsity, {s.geometry_steps} steps; the lowest-loss "
           f"one is drawn (columns W<sub>i</sub>) and its geometry named from norms, cosines and D<sub>i</sub>.")
    k = len(geo["sparsity"])
    fig, axes = plt.subplots(1, k, figsize=(2.6 * k, 2.9))
    for ax, v, w, name in zip(axes, geo["sparsity"], geo["W"], geo["names"]):
        sp.plot_vectors_2d(w, ax, title=f"S = {v:g}\n{name}", limit=1.5)
    r.figure(fig, caption="Feature directions W_i of the best instance per sparsity, with the named geometry.")
    fig, axes = plt.subplots(1, k, figsize=(2.6 * k, 2.9))
    for ax, v, w, name in zip(axes, geo["sparsity"], geo["W_linear"], geo["linear_names"]):
        sp.plot_vectors_2d(w, ax, title=f"linear, S = {v:g}\n{name}", limit=1.5)
    r.figure(fig, caption="Control: the same features through a linear-output model (no ReLU) never superpose.")
    rows = [[f"{v:g}", name, " ".join(f"{x:.2f}" for x in norms.tolist()), " ".join(f"{x:.2f}" for x in D.tolist()),
             f"{names.count(name)}/{len(names)}"]
            for v, name, norms, D, names in zip(geo["sparsity"], geo["names"], geo["norms"], geo["D"], geo["all_names"])]
    r.table(["S", "geometry", "||W_i||", "D_i", "restarts agreeing"], rows,
            caption="Best instance per sparsity; features in order of importance.")
    R = s.geometry_restarts
    fig, axes = plt.subplots(k, R, figsize=(1.4 * R, 1.5 * k), squeeze=False)
    for a in range(k):
        for b in range(R):
            sp.plot_vectors_2d(geo["W_all"][a * R + b], axes[a][b], title=geo["all_names"][a][b], limit=1.5)
            axes[a][b].title.set_fontsize(5)
    r.figure(fig, caption="Every initialisation (rows: sparsities as above).")

    r.section("2. Phase diagram: two features, one dimension")
    r.text(f"Feature 1 has importance 1, feature 2 the relative importance on the y axis; both share the "
           f"sparsity. {s.phase_grid} x {s.phase_grid} cells x {s.phase_restarts} initialisations in one model "
           f"({s.phase_grid ** 2 * s.phase_restarts} instances), {s.phase_steps} steps; each cell shows the "
           f"lowest-loss initialisation.")
    r.figure(sp.plot_phase_diagram(phase["cells"], phase["sparsity"], phase["importance"]),
             caption="What happens to feature 2; black lines separate the regions.")
    counts = {p: sum(row.count(p) for row in phase["cells"]) for p in sp.PHASES}
    r.table(["phase", "cells"], [[p, c] for p, c in counts.items() if c], caption="Cells per phase")

    r.section("3. Dimensions per feature")
    r.text(f"n={s.dim_features} features of equal importance in m={s.dim_hidden} dimensions, "
           f"{s.dim_points} sparsities, {s.dim_steps} steps. The curve m/||W||<sub>F</sub><sup>2</sup> sticks "
           f"at the values listed (detected from the numbers: flat runs of the curve).")
    r.figure(sp.plot_dimensionality(dim["inv_density"], dim["dims_per_feature"], dim["D"], dim["plateaus"]),
             caption="Dimensions per feature (line) and each feature's dimensionality D_i (dots).")
    r.table(["1/(1-S)", "dimensions per feature"],
            [[f"{x:.3g}", f"{y:.3f}"] for x, y in zip(dim["inv_density"], dim["dims_per_feature"])])

    r.section("4. Finite datasets")
    r.text(f"n={s.finite_features} features (S={s.finite_sparsity:g}), m=2, one instance per dataset size T "
           f"(points scaled to unit norm), {s.finite_steps} steps with weight decay {s.finite_weight_decay:g}. Top row: features "
           f"W_i; bottom row: hidden vectors h_t = W x_t of the training points.")
    T = fin["T"]
    fig, axes = plt.subplots(2, len(T), figsize=(1.9 * len(T), 4.0), squeeze=False)
    for c, t in enumerate(T):
        sp.plot_vectors_2d(fin["W"][c], axes[0][c], colors=["#4c72b0"] * fin["W"].shape[-1], title=f"T = {t}")
        h = fin["H"][c][:, :300]
        sp.plot_vectors_2d(h, axes[1][c], colors=["#c44e52"] * h.shape[1])
    axes[0][0].set_ylabel("features")
    axes[1][0].set_ylabel("data points")
    r.figure(fig, caption="Features (top) and training points (bottom) in the hidden plane, by dataset size.")
    r.figure(sp.plot_finite_dimensionality(T, fin["feature_D"], fin["data_D"], fin["test_loss"]),
             caption="Dimensionality of features and of data points, and test loss, against T.")
    r.table(["T", "features", "data points", "max D_i", "max D_t", "train loss", "test loss"],
            [[t, fg, dg, a, b, f"{c:.3g}", f"{d:.3g}"] for t, fg, dg, a, b, c, d in
             zip(T, results["finite_feature_geometry"], results["finite_datapoint_geometry"],
                 results["finite_feature_dim_max"], results["finite_datapoint_dim_max"],
                 fin["train_loss"], fin["test_loss"])],
            caption="Named geometry of the features and of the training points' hidden vectors.")
    return r.save(out / "report.html")


cli = study_command(
    Settings, run, {"full": FULL, "quick": QUICK}, settings_arg="settings", out_default=Path("runs/tms"),
    doc="Toy models of superposition: geometry by sparsity, phase diagram, sticky dimensionality, finite data.",
    extra=[parameter("seed", int, 0, "Seed for initialisation and data.", {"ge": 0})])
