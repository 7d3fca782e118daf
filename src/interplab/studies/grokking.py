"""Grokking: modular addition memorised, then generalised; Fourier circuit and progress measures.

Reproduces Nanda et al. (2023), "Progress measures for grokking via mechanistic
interpretability": a 1-layer transformer (4 heads, d_model 128, d_mlp 512, ReLU, no
LayerNorm, no biases) trained full batch with AdamW (lr 1e-3, weight decay 1) on 30% of all
pairs ``a + b mod p``. From the weight history it finds the key frequencies (embedding norm
per frequency), groups MLP neurons by frequency, shows the logits in the 2D Fourier basis,
and tracks restricted loss, excluded loss and total weight norm against train and test loss.

Training stops once test accuracy has stayed at or above 99% for a while (the clean-up
phase), or at ``max_epochs``. ``--quick`` uses p = 53 with 60% of the pairs for training:
with 30% (or 50%) of so few pairs the model groks thousands of epochs later, too late for a
run of a few minutes, while 60% still shows memorisation well before generalisation. A finished run in ``out_dir`` is reused, so the analysis can be
redone without training again.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch

from interplab.options import setting, study_command
from interplab.analysis.fourier import (fourier_2d, fourier_basis, frequency_norms, key_frequencies,
                                        neuron_frequencies)
from interplab.analysis.progress import checkpoint_series, first_epoch, grokking_phases, modular_logits_table
from interplab.devices import Placement
from interplab.errors import check
from interplab.io import read_json, write_results
from interplab.models import Transformer
from interplab.report import Report, announce
from interplab.numerics import numerics
from interplab.runs import load_checkpoint, read_metrics, state_path
from interplab.tasks.modular import modular_task
from interplab.train import TrainConfig, train_or_resume



@dataclass(frozen=True)
class Settings:
    """The modulus, split, training length and checkpoint spacing (``FULL`` and ``QUICK`` below)."""

    p: int = setting(113, "Modulus (odd).", ge=3, le=1000)
    frac_train: float = setting(0.3, "Fraction of pairs used for training.", gt=0, lt=1)
    max_epochs: int = setting(20000, "Most epochs to train (training stops earlier once grokked).", ge=1)
    checkpoint_every: int = setting(200, "Epochs between weight snapshots.", ge=1)
    seed: int = setting(0, "Seed for the split, the initialisation and training.", ge=0)


FULL = Settings()
QUICK = Settings(p=53, frac_train=0.6, max_epochs=5000, checkpoint_every=100)


class _StopAfterCleanup:
    """Stop once test accuracy has been >= 0.99 for ``max(500, 15%)`` of the epochs it took.

    Its state (the first logged epoch at 0.99) is not in the training checkpoint: :meth:`for_run`
    rebuilds it from the run's metrics up to the checkpoint, so a resumed run stops at the same
    epoch as one trained without interruption.
    """

    def __init__(self) -> None:
        self.first: int | None = None

    @classmethod
    def for_run(cls, out: Path) -> "_StopAfterCleanup":
        """The rule as it stood at the checkpoint in ``out`` (a fresh one when there is none)."""
        stopper = cls()
        if state_path(out).is_file():
            upto = int(load_checkpoint(state_path(out))["epoch"])
            for row in read_metrics(out / "metrics.jsonl", upto):
                stopper.see(row)
        return stopper

    def see(self, row: dict[str, Any]) -> None:
        if self.first is None and row.get("test_acc", 0.0) >= 0.99:
            self.first = row["epoch"]

    def __call__(self, row: dict[str, Any]) -> bool:
        self.see(row)
        return self.first is not None and row["epoch"] >= self.first + max(500, int(0.15 * self.first))


@numerics()
def run(out_dir: str | Path, p: int | None = None, max_epochs: int | None = None, frac_train: float | None = None,
        seed: int = 0, checkpoint_every: int | None = None, quick: bool = False, quiet: bool = False,
        device: str = "auto", dtype: str = "float32") -> dict[str, Any]:
    """Train (or reuse) the grokking run in ``out_dir``, analyse it, write results.json and report.html.

    Training runs on ``device`` in ``dtype``; the analysis of the trained weights on the CPU in float32.
    """
    t0 = time.perf_counter()
    placement = Placement(device, dtype)
    preset = QUICK if quick else FULL
    p = p if p is not None else preset.p
    frac_train = frac_train if frac_train is not None else preset.frac_train
    max_epochs = max_epochs if max_epochs is not None else preset.max_epochs
    checkpoint_every = checkpoint_every if checkpoint_every is not None else preset.checkpoint_every
    check(p >= 3 and p % 2 == 1, f"The Fourier analysis needs an odd modulus p >= 3, got {p}.")
    out = Path(out_dir)
    task = modular_task(p=p, frac_train=frac_train, seed=seed)
    model = placement.apply(Transformer(task.default_model_config(), seed=seed))
    cfg = TrainConfig(epochs=max_epochs, lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), seed=seed, log_every=50,
                      checkpoint_every=checkpoint_every, keep_history=True)
    resume = state_path(out).exists()
    result = train_or_resume(model, task, cfg, out, quiet=quiet, stop=_StopAfterCleanup.for_run(out))
    metrics = result.metrics
    train_time = metrics[-1]["time"] if metrics else 0.0
    model.to(device="cpu", dtype=torch.float32)

    # -- the final model: Fourier structure ---------------------------------------------------
    emb_norms = frequency_norms(model.W_E[:p].detach())
    keys = key_frequencies(emb_norms)
    logits, neurons = modular_logits_table(model, task)
    neuron_freq, neuron_share = neuron_frequencies(neurons)
    alive = neurons.flatten(0, 1).abs().amax(0) > 1e-6
    in_key = torch.tensor([int(f) in keys for f in neuron_freq]) & alive & (neuron_share > 0.5)
    frac_neurons_key = in_key.sum().item() / max(1, alive.sum().item())

    # -- progress measures over the weight history ------------------------------------------
    series = checkpoint_series(Transformer(task.default_model_config(), seed=seed), task, out / "checkpoints", keys)

    final = metrics[-1]
    ep_train99 = first_epoch(metrics, "train_acc", 0.99)
    ep_test99 = first_epoch(metrics, "test_acc", 0.99)
    # the test loss "drops" at the first checkpoint below half its value at memorisation
    epochs = series["epoch"]
    i_mem, i_drop, i_pre = grokking_phases(epochs, series["test_loss"], ep_train99)
    results: dict[str, Any] = {
        "p": p,
        "final_test_acc": final.get("test_acc"),
        "final_train_acc": final.get("train_acc"),
        "epochs_trained": result.epochs_run,
        "key_frequencies": keys,
        "n_key_frequencies": len(keys),
        "frac_neurons_in_key_frequencies": frac_neurons_key,
        "epoch_train_acc_99": ep_train99,
        "epoch_test_acc_99": ep_test99,
        "epoch_test_loss_drop": epochs[i_drop] if epochs else None,
        "restricted_loss_at_memorization": series["restricted_loss"][i_mem] if epochs else None,
        "restricted_loss_before_drop": series["restricted_loss"][i_pre] if epochs else None,
        "excluded_loss_at_memorization": series["excluded_loss"][i_mem] if epochs else None,
        "excluded_loss_before_drop": series["excluded_loss"][i_pre] if epochs else None,
        "checkpoint_epochs": epochs,
        "restricted_loss": series["restricted_loss"],
        "excluded_loss": series["excluded_loss"],
        "train_loss": series["train_loss"],
        "test_loss": series["test_loss"],
        "weight_norm": series["weight_norm"],
        "train_seconds": train_time,
        "wall_seconds": round(time.perf_counter() - t0, 1) if not resume else None,
    }
    results["restricted_falls_before_drop"] = bool(epochs) and results["restricted_loss_before_drop"] < \
        results["restricted_loss_at_memorization"]
    results["excluded_rises_before_drop"] = bool(epochs) and results["excluded_loss_before_drop"] > \
        results["excluded_loss_at_memorization"]
    write_results(out, results)
    report = _report(results, metrics, emb_norms, keys, neuron_freq, neuron_share, alive, logits)
    path = report.save(out / "report.html")
    announce([f"grokking p={p}: final test acc {results['final_test_acc']:.4f} after {result.epochs_run} epochs; "
              f"train acc >= 0.99 at epoch {ep_train99}, test acc >= 0.99 at epoch {ep_test99}",
              f"key frequencies {keys}; {frac_neurons_key:.0%} of live neurons read one of them",
              f"restricted loss {results['restricted_loss_at_memorization']:.3g} -> "
              f"{results['restricted_loss_before_drop']:.3g}, excluded loss "
              f"{results['excluded_loss_at_memorization']:.3g} -> {results['excluded_loss_before_drop']:.3g} "
              f"(memorisation -> just before the test loss drops at epoch {results['epoch_test_loss_drop']})"], path)
    return results


def _report(results: dict[str, Any], metrics: list[dict[str, Any]], emb_norms: torch.Tensor, keys: list[int],
            neuron_freq: torch.Tensor, neuron_share: torch.Tensor, alive: torch.Tensor, logits: torch.Tensor) -> Report:
    p = results["p"]
    r = Report(f"Grokking modular addition mod {p}",
               subtitle="1-layer transformer, AdamW lr 1e-3, weight decay 1, full batch, 30% of pairs for training")
    r.numbers({"final test acc": results["final_test_acc"], "epochs": results["epochs_trained"],
               "train acc >= 99% at": results["epoch_train_acc_99"], "test acc >= 99% at": results["epoch_test_acc_99"],
               "key frequencies": ", ".join(map(str, keys)),
               "neurons on a key frequency": results["frac_neurons_in_key_frequencies"]})
    r.section("Memorisation, then generalisation")
    ep = [m["epoch"] for m in metrics]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(ep, [m["train_acc"] for m in metrics], label="train")
    axes[0].plot(ep, [m["test_acc"] for m in metrics], label="test")
    axes[0].set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    axes[0].legend()
    axes[1].semilogy(ep, [m["train_loss"] for m in metrics], label="train")
    axes[1].semilogy(ep, [m["test_loss"] for m in metrics], label="test")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    axes[1].legend()
    r.figure(fig, caption="Train accuracy reaches 100% long before test accuracy: the model memorises first.")
    r.section("Progress measures across checkpoints")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    e = results["checkpoint_epochs"]
    for key, style in (("train_loss", "-"), ("test_loss", "-"), ("restricted_loss", "--"), ("excluded_loss", "--")):
        ax.semilogy(e, results[key], style, label=key.replace("_", " "))
    for key, color in (("epoch_train_acc_99", "grey"), ("epoch_test_loss_drop", "black")):
        if results[key] is not None:
            ax.axvline(results[key], color=color, lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylabel="cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(e, results["weight_norm"], color="tab:purple", lw=1, label="weight norm")
    ax2.set_ylabel("total weight norm")
    ax.legend(loc="lower left")
    ax2.legend(loc="upper right")
    r.figure(fig, caption="Restricted loss (only the key-frequency cos(w(a+b-c)) terms of the logits) falls and "
                          "excluded loss (those terms removed, training pairs) rises while the test loss is still "
                          "high; the dotted lines mark memorisation and the test-loss drop.")
    r.table(["measure", "at memorisation", "just before the test loss drops"],
            [["restricted loss", results["restricted_loss_at_memorization"], results["restricted_loss_before_drop"]],
             ["excluded loss", results["excluded_loss_at_memorization"], results["excluded_loss_before_drop"]]],
            caption=f"Memorisation: train acc >= 99% (epoch {results['epoch_train_acc_99']}); test loss drop: first "
                    f"checkpoint below half its value there (epoch {results['epoch_test_loss_drop']}).")
    r.section("Fourier structure of the final model")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    k = torch.arange(1, len(emb_norms) + 1)
    axes[0].bar(k.numpy(), emb_norms.numpy(), color=["tab:red" if int(f) in keys else "tab:blue" for f in k])
    axes[0].set(xlabel="frequency k", ylabel="norm", title="Embedding norm per frequency")
    live = alive & (neuron_share > 0.5)
    counts = torch.bincount(neuron_freq[live], minlength=len(emb_norms) + 1)[1:]
    axes[1].bar(k.numpy(), counts.numpy())
    axes[1].set(xlabel="frequency k", ylabel="neurons", title="Neurons by dominant frequency (share > 50%)")
    coef = fourier_2d(logits).pow(2).sum(-1).sqrt()
    coef[0, 0] = 0.0  # the constant term (a logit offset per c) would swamp the colour scale
    _, names = fourier_basis(p)
    im = axes[2].imshow(coef[: min(p, 41), : min(p, 41)].numpy(), cmap="viridis")
    axes[2].set(title="Logits in the 2D Fourier basis (norm over c)", xlabel="b component", ylabel="a component")
    fig.colorbar(im, ax=axes[2])
    r.figure(fig, caption=f"Key frequencies (red) found automatically: {keys}. Components are ordered const, "
                          "cos 1, sin 1, cos 2, ...; only the first 41 are shown, and the const x const term is "
                          "left out of the logit panel.")
    return r


cli = study_command(Settings, run, {"full": FULL, "quick": QUICK},
                    doc="Grokking of modular addition: Fourier circuit, key frequencies, restricted and excluded loss.")

