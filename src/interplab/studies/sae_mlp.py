"""SAEs on the MLP neurons of a 1-layer modular-addition transformer: dead-feature fixes and ITO.

The study trains (or reuses, with ``--run``) a 1-layer transformer on modular addition, then
trains sparse autoencoders on ``blocks.0.mlp.hook_post`` at the last position with four
recipes (plain, resampling, ghost grads original, ghost grads rescaled by the dead fraction)
across L1 coefficients, and scores each by L0 and loss recovered when its reconstruction is
spliced back into the model (against zero ablation; the loss is the cross-entropy against the
model's own answers on all p^2 inputs, so the score measures faithfulness to the model). One trained dictionary is then read out
by its encoder, top-k, matching pursuit, OMP and gradient pursuit at the encoder's L0.

L1 coefficients are given in units of the activations' RMS norm, so the same values fit
models of any activation scale (the L1 term scales linearly with the activations, the
squared error quadratically).

Results (``results.json``): ``pareto`` (method -> list of [L0, loss_recovered]), ``ito``
(readout -> [L0, loss_recovered]), ``ito_k``, and per-recipe dead counts.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Any, Optional

import torch

from interplab.devices import Placement
from interplab.options import parameter, setting, study_command
from interplab.errors import check
from interplab.instrument import Site
from interplab.io import PathLike, read_json, write_results
from interplab.report import Report, announce
from interplab.sae.buffer import collect, sample_rows
from interplab.sae.dashboard import write_dashboards
from interplab.sae.ito import equal_l0_readouts, readout
from interplab.sae.metrics import (cross_entropy_at, density_histogram, enc_dec_cosine, feature_density, kurtosis, l0,
                                   loss_recovered, neuron_sparsity, variance_explained)
from interplab.sae.model import SAE, SAEConfig
from interplab.numerics import numerics
from interplab.sae.train import SAETrainConfig, make_buffer, train_sae_or_resume

RECIPES = {"plain": "none", "resampling": "resample", "ghost grads original": "ghost-original",
           "ghost grads rescaled": "ghost-scaled"}
SITE = "blocks.0.mlp.hook_post"


@dataclass(frozen=True)
class Settings:
    """What the study can be asked to change (``FULL`` and ``QUICK`` below)."""

    p: int = setting(53, "Modulus of the modular-addition model trained when --run is not given.", ge=2, le=1000)
    frac_train: float = setting(0.5, "Fraction of pairs that model trains on.", gt=0, le=1)
    model_epochs: int = setting(1500, "Epochs for that model.", ge=1)
    expansion: int = setting(1, "SAE width as a multiple of d_mlp.", ge=1, le=256)
    steps: int = setting(1200, "Training steps per SAE.", ge=1)
    batch_size: int = setting(128, "Activation rows per SAE step.", ge=1, le=1 << 20)
    l1_values: tuple[float, ...] = setting((0.03, 0.1, 0.3), "Comma-separated L1 coefficients, in units of the "
                                           "activation RMS norm.", ge=0, le=1e6, flag="--l1")
    dashboards: int = setting(6, "Feature dashboards to write (densest features).", ge=0, le=10_000)
    seed: int = setting(0, "Seed for the model, the SAEs and their buffers.", ge=0)


FULL = Settings()
QUICK = Settings(model_epochs=600, steps=400, dashboards=2)


def _model_and_task(out: Path, run_dir: Optional[PathLike], p: int, frac_train: float, epochs: int, seed: int,
                    quiet: bool, data_dir: Any, placement: Placement) -> tuple[torch.nn.Module, Any, Path]:
    from interplab.models import Transformer
    from interplab.runs import load
    from interplab.tasks import make_task
    from interplab.tasks.modular import modular_task
    from interplab.train import TrainConfig, train_or_resume

    if run_dir is not None:
        run_dir = Path(run_dir)
        model = load(run_dir, device=placement.torch_device, dtype=placement.torch_dtype)
        task = make_task(read_json(run_dir / "config.json")["task"], data_dir=data_dir)
        check(task.positions is not None and SITE in model.mod_dict,
              f"Run {run_dir} is not a transformer with an MLP in block 0 trained on a token task.")
        return model, task, run_dir
    task = modular_task(p=p, frac_train=frac_train, seed=seed)
    model = placement.apply(Transformer(task.default_model_config(), seed=seed))
    model_dir = out / "model"
    cfg = TrainConfig(epochs=epochs, lr=1e-3, weight_decay=1.0, seed=seed, log_every=100, checkpoint_every=500,
                      keep_history=False)
    train_or_resume(model, task, cfg, model_dir, quiet=quiet)
    return model, task, model_dir


@numerics()
def run(
    out_dir: PathLike,
    run_dir: Optional[PathLike] = None,
    p: int = FULL.p,
    frac_train: float = FULL.frac_train,
    model_epochs: int = FULL.model_epochs,
    expansion: int = FULL.expansion,
    steps: int = FULL.steps,
    batch_size: int = FULL.batch_size,
    l1_values: tuple[float, ...] = FULL.l1_values,
    recipes: tuple[str, ...] = tuple(RECIPES),
    ito_recipe: str = "plain",
    dashboards: int = FULL.dashboards,
    seed: int = FULL.seed,
    quiet: bool = False,
    data_dir: Any = None,
    device: str = "auto",
    dtype: str = "float32",
) -> dict[str, Any]:
    """Run the study into ``out_dir``; returns the results dict (see the module docstring).

    The model, its task and the SAEs live on ``device`` in ``dtype`` (recorded in results.json).

    Example (tiny; the real defaults take minutes):
        >>> import tempfile
        >>> r = run(tempfile.mkdtemp(), p=7, model_epochs=5, steps=20, batch_size=16, l1_values=(0.1,),
        ...         recipes=("plain",), dashboards=1, quiet=True)  # doctest: +ELLIPSIS
        sae-mlp: ...
        >>> sorted(r["pareto"]), sorted(r["ito"])
        (['plain'], ['encoder', 'gp', 'mp', 'omp', 'topk'])
    """
    for name in recipes:
        check(name in RECIPES, f"Unknown recipe {name!r}; choose from {', '.join(RECIPES)}.")
    check(ito_recipe in recipes, f"ito_recipe {ito_recipe!r} must be one of the recipes trained.")
    check(len(l1_values) >= 1 and all(v > 0 for v in l1_values), "l1_values must be positive numbers.")
    placement = Placement(device, dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, task, model_dir = _model_and_task(out, run_dir, p, frac_train, model_epochs, seed, quiet, data_dir,
                                             placement)
    model.eval()
    task = task.to(placement.torch_device)
    site = Site(SITE, position=task.positions[0])
    inputs = task.inputs
    with torch.no_grad():  # the model's own answers: loss recovered then measures faithfulness to the model
        labels = model(inputs)[:, task.positions[0]].argmax(-1)
    test_acc = (labels[task.test_idx] == task.labels[task.test_idx]).float().mean().item() if len(task.test_idx) else float("nan")
    train_acc = (labels[task.train_idx] == task.labels[task.train_idx]).float().mean().item()
    ce = cross_entropy_at(task.positions[0])
    acts = collect(model, site, inputs)
    rms = acts.pow(2).sum(-1).mean().sqrt().item()
    mean_act = acts.mean(0)
    d_in = acts.shape[1]
    d_sae = expansion * d_in

    def spliced(fn: Any) -> dict[str, float]:
        return loss_recovered(model, inputs, labels, site, fn, ce, mean_act=mean_act)

    rows, pareto, dead, saes = [], {}, {}, {}
    for name in recipes:
        pareto[name], dead[name] = [], []
        for c in l1_values:
            cfg = SAETrainConfig(steps=steps, batch_size=batch_size, lr=1e-3, l1_coeff=c * rms, dead_fix=RECIPES[name],
                                 dead_window=100, resample_every=max(1, steps // 4), buffer_size=max(2 * batch_size, 8192),
                                 model_batch=1024, seed=seed, log_every=100, checkpoint_every=steps)
            sae = placement.apply(SAE(SAEConfig(d_in=d_in, d_sae=d_sae, hook_name=SITE, position=site.position),
                                      seed=seed))
            sae_dir = out / "saes" / f"{RECIPES[name]}_l1_{c:g}"
            train_sae_or_resume(sae, make_buffer(model, site, sample_rows(inputs), cfg), cfg, sae_dir, quiet=quiet,
                                model_name=str(model_dir))
            with torch.no_grad():
                f = sae.encode(acts)
                x_hat = sae.decode(f)
            rec = spliced(lambda a, s=sae: s(a))
            n_dead = int((feature_density(f) == 0).sum())
            row = {"recipe": name, "l1": c, "l0": l0(f), "variance_explained": variance_explained(acts, x_hat),
                   "recovered_zero": rec["recovered_zero"], "recovered_mean": rec["recovered_mean"], "dead": n_dead}
            rows.append(row)
            pareto[name].append([row["l0"], row["recovered_zero"]])
            dead[name].append(n_dead)
            saes[(name, c)] = sae
            if not quiet:
                print(f"  {name}, l1 {c:g}: L0 {row['l0']:.2f}, loss recovered {row['recovered_zero']:.4f}, dead {n_dead}")

    # one dictionary, five readouts at equal L0
    mid = l1_values[len(l1_values) // 2]
    chosen = saes[(ito_recipe, mid)]
    k, ito = equal_l0_readouts(chosen, acts, lambda fn: spliced(fn)["recovered_zero"])
    # every plain dictionary read out by gradient pursuit at the same k
    gp_by_dict = {f"{c:g}": spliced(lambda a, s=saes[(ito_recipe, c)]: readout(s, a, "gp", k)[1])["recovered_zero"]
                  for c in l1_values}
    top1, next9 = neuron_sparsity(chosen.W_dec)
    live = feature_density(chosen.encode(acts).detach()) > 0
    geometry = {"top1_share": top1[live].mean().item(), "next9_share": next9[live].mean().item(),
                "kurtosis_median": kurtosis(chosen.W_dec)[live].median().item(),
                "enc_dec_cosine": enc_dec_cosine(chosen)[live].mean().item()}

    clean = spliced(lambda a: a)
    results: dict[str, Any] = {
        "pareto": pareto, "ito": ito, "ito_k": k, "ito_dictionary": f"{ito_recipe}, l1 {mid:g}",
        "dead": dead, "l1_values": list(l1_values), "activation_rms": rms, "d_sae": d_sae, "d_in": d_in,
        "clean_loss": clean["clean"], "zero_ablation_loss": clean["zero"], "mean_ablation_loss": clean["mean"],
        "train_acc": train_acc, "test_acc": test_acc, "gp_by_dictionary": gp_by_dict, **geometry, **placement.record(),
    }
    write_results(out, results)
    report_path = _report(out, results, rows, saes, acts, l1_values, recipes, mid, model, chosen, inputs, site,
                          dashboards, model_dir)
    best = max(rows, key=lambda r: r["recovered_zero"])
    announce([f"sae-mlp: ITO at L0 {k} on the {ito_recipe} dictionary (l1 {mid:g}): "
              + ", ".join(f"{m} {v[1]:.4f}" for m, v in ito.items()),
              f"sae-mlp: best loss recovered {best['recovered_zero']:.4f} at L0 {best['l0']:.1f} ({best['recipe']})"],
             report_path)
    return results


def _report(out: Path, results: dict[str, Any], rows: list[dict[str, Any]], saes: dict[Any, SAE], acts: torch.Tensor,
            l1_values: tuple[float, ...], recipes: tuple[str, ...], mid: float, model: torch.nn.Module, chosen: SAE,
            inputs: torch.Tensor, site: Site, dashboards: int, model_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    r = Report("SAEs on the MLP neurons of a modular-addition transformer",
               subtitle=f"site {site.name} at position {site.position}; model {model_dir}")
    r.numbers({"clean loss": results["clean_loss"], "test accuracy": results["test_acc"],
               "SAE width": results["d_sae"], "ITO L0": results["ito_k"],
               "GP loss recovered": results["ito"]["gp"][1], "encoder loss recovered": results["ito"]["encoder"][1]})
    r.section("Pareto frontier: L0 against loss recovered")
    r.text("Loss recovered = (L_zero - L_sae) / (L_zero - L_clean), the SAE's reconstruction spliced into the model "
           "at the last position on all p^2 inputs; the loss is the cross-entropy against the model's own answers "
           "(so it measures faithfulness to the model, whether or not the model generalizes: train accuracy "
           f"{results['train_acc']:.3f}, test accuracy {results['test_acc']:.3f}). L1 coefficients are in units of "
           f"the activations' RMS norm ({results['activation_rms']:.3g}).")
    r.table(["recipe", "l1", "L0", "loss recovered (zero)", "loss recovered (mean)", "variance explained", "dead"],
            [[x["recipe"], x["l1"], x["l0"], x["recovered_zero"], x["recovered_mean"], x["variance_explained"], x["dead"]]
             for x in rows])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in recipes:
        pts = sorted(results["pareto"][name])
        ax.plot([q[0] for q in pts], [q[1] for q in pts], "o-", label=name)
    ax.set_xlabel("L0 (active features per input)")
    ax.set_ylabel("loss recovered")
    ax.legend(fontsize=8)
    r.figure(fig, caption="Each point is one SAE; up and to the left is better.")
    r.section("Feature density")
    with torch.no_grad():
        dens = {name: feature_density(saes[(name, mid)].encode(acts)) for name in recipes}
    r.figure(density_histogram(dens, n_rows=len(acts)), caption=f"log10 feature density at l1 {mid:g}, per recipe.")
    r.section("Inference-time optimization: one dictionary, five readouts at equal L0")
    r.table(["readout", "L0", "loss recovered"], [[m, v[0], v[1]] for m, v in results["ito"].items()],
            caption=f"Dictionary: {results['ito_dictionary']}; k = {results['ito_k']} (the encoder's rounded L0).")
    r.table(["dictionary (l1)", "gradient pursuit loss recovered at L0 " + str(results["ito_k"])],
            [[c, v] for c, v in results["gp_by_dictionary"].items()],
            caption="Every dictionary of the same recipe read out by gradient pursuit at the same L0: dictionaries "
                    "trained at a different sparsity compared on equal terms.")
    r.section("Feature geometry (live features of the ITO dictionary)")
    r.table(["measure", "value"], [["mean share of decoder norm^2 in the top neuron", results["top1_share"]],
                                   ["mean share in the next 9 neurons", results["next9_share"]],
                                   ["median kurtosis in the neuron basis", results["kurtosis_median"]],
                                   ["mean cosine(encoder row, decoder row)", results["enc_dec_cosine"]]])
    if dashboards > 0:
        with torch.no_grad():
            density = feature_density(chosen.encode(acts))
        features = density.argsort(descending=True)[:dashboards].tolist()
        index = write_dashboards(chosen, model, inputs, site, features, out / "dashboards",
                                 describe=lambda x: f"{int(x[0])} + {int(x[1])} =")
        r.section("Feature dashboards")
        r.text(f"<a href='{index.relative_to(out)}'>Dashboards of the {len(features)} densest features</a>.")
    r.section("Settings")
    r.code(str({k: v for k, v in results.items() if k in ("l1_values", "d_sae", "d_in", "ito_dictionary")}))
    return r.save(out / "report.html")


cli = study_command(
    Settings, run, {"full": FULL, "quick": QUICK},
    doc="SAEs on the MLP neurons of a 1-layer transformer: dead-feature fixes and ITO readouts.",
    extra=[parameter("run_dir", Path, None, "Reuse a trained 1-layer transformer run instead of training one.",
                     flag="--run"),
           parameter("data_dir", Path, None, "Data directory (for --run on a pair-labels model).")])



__all__ = ["run", "cli", "RECIPES"]
