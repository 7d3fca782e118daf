"""The ``interplab`` command line: train, info, study, sae.

Every user-caused error is an :class:`~interplab.errors.InterplabError`; :func:`main` prints
its one sentence on stderr and exits with code 2, without a traceback.

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(app, ["--help"])
    >>> result.exit_code, "train" in result.output
    (0, True)
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from interplab.errors import InterplabError

app = typer.Typer(
    help="interplab: train small networks, look inside them, and test explanations causally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
study_app = typer.Typer(
    help="Reproduce a published result end to end; each study writes results.json and report.html.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")


@app.callback()
def _numerics_options(
    flush_denormal: bool = typer.Option(True, "--flush-denormal/--no-flush-denormal",
                                        help="Flush subnormal floats to zero in training and long loops "
                                        "(fast on x86; see interplab.numerics)."),
    fast: bool = typer.Option(False, "--fast", help="Allow non-deterministic algorithms (faster on GPU; the same "
                              "seed may then give different weights at different thread counts)."),
) -> None:
    """Numerics switches for every command; they set INTERPLAB_FLUSH_DENORMAL and INTERPLAB_DETERMINISTIC."""
    import os

    from interplab.numerics import DETERMINISTIC_ENV, FLUSH_ENV

    if not flush_denormal:
        os.environ[FLUSH_ENV] = "0"
    if fast:
        os.environ[DETERMINISTIC_ENV] = "0"

# Each study lives in its own module exposing ``cli``, a typer command function.
STUDIES = {
    "eis-transformer": "interplab.studies.eis_transformer",
    "eis-cnn": "interplab.studies.eis_cnn",
    "tms": "interplab.studies.tms",
    "sae-tms": "interplab.studies.sae_tms",
    "sae-mlp": "interplab.studies.sae_mlp",
    "atp": "interplab.studies.atp",
    "grokking": "interplab.studies.grokking",
}
# Sub-applications living beside the technique they drive, each exposing ``app``.
SUBAPPS = {"sae": "interplab.sae.cli"}


def _register() -> None:
    for name, module_name in STUDIES.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip().splitlines()
        study_app.command(name=name, help=doc[0] if doc else None)(module.cli)
    for name, module_name in SUBAPPS.items():
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            app.add_typer(importlib.import_module(module_name).app, name=name)


# Per task: its builder options and the training defaults that make it learn.
TASKS: dict[str, dict[str, Any]] = {
    "modular-addition": {"options": ("p", "frac_train"), "fixed": {"op": "+"},
                         "train": {"epochs": 3000, "lr": 1e-3, "weight_decay": 10.0}},
    "modular-subtraction": {"options": ("p", "frac_train"), "fixed": {"op": "-"},
                            "train": {"epochs": 3000, "lr": 1e-3, "weight_decay": 10.0}},
    "modular-division": {"options": ("p", "frac_train"), "fixed": {"op": "/"},
                         "train": {"epochs": 3000, "lr": 1e-3, "weight_decay": 10.0}},
    "pair-labels": {"options": ("labels", "frac_train"), "fixed": {},
                    "train": {"epochs": 5000, "lr": 5e-4, "weight_decay": 1.0}},
    "sorting": {"options": ("n_values", "k", "n_examples", "frac_train"), "fixed": {},
                "train": {"epochs": 300, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256}},
    "min-max": {"options": ("n_values", "frac_train"), "fixed": {},
                "train": {"epochs": 500, "lr": 1e-3, "weight_decay": 0.1, "batch_size": 512}},
    "induction": {"options": ("n_values", "length", "n_examples", "frac_train"), "fixed": {},
                  "train": {"epochs": 200, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256}},
    "previous-token": {"options": ("n_values", "length", "n_examples", "frac_train"), "fixed": {},
                       "train": {"epochs": 100, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256}},
    "memorization": {"options": ("n", "n_classes", "frac_train"), "fixed": {},
                     "train": {"epochs": 500, "lr": 1e-3, "weight_decay": 0.0}},
}


@app.command("train")
def train_command(
    task: str = typer.Argument(..., help=f"One of: {', '.join(TASKS)}."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (or to continue with --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out to its configured end, "
                                "with its stored settings (other options are ignored)."),
    seed: int = typer.Option(0, help="Seed for the split, the initialisation and the batch order."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (task default if omitted)."),
    lr: Optional[float] = typer.Option(None, help="AdamW learning rate (task default if omitted)."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (task default if omitted)."),
    beta1: float = typer.Option(0.9, help="AdamW beta1."),
    beta2: float = typer.Option(0.98, help="AdamW beta2."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (task default; full batch if none)."),
    schedule: str = typer.Option("constant", help="constant, warmup, cosine or linear."),
    warmup_epochs: int = typer.Option(0, help="Linear warm-up epochs."),
    log_every: int = typer.Option(10, help="Log metrics every N epochs."),
    checkpoint_every: int = typer.Option(100, help="Checkpoint every N epochs."),
    patience: Optional[int] = typer.Option(None, help="Stop once train accuracy is 100%% and test accuracy "
                                           "has not improved for N epochs."),
    stop_loss: Optional[float] = typer.Option(None, help="Stop once the training loss has stayed below this "
                                              "for --stop-patience epochs (training split only)."),
    stop_patience: int = typer.Option(100, help="Epochs the training loss must stay below --stop-loss."),
    p: Optional[int] = typer.Option(None, help="[modular] The modulus (default 113)."),
    frac_train: Optional[float] = typer.Option(None, help="Fraction of examples used for training."),
    labels: Optional[str] = typer.Option(None, help="[pair-labels] 'published', 'builtin', or a path/URL of a "
                                         "numpy-only label pickle (default: published if the data directory "
                                         "has it, else builtin)."),
    n_values: Optional[int] = typer.Option(None, help="[sequences] Number of token values."),
    k: Optional[int] = typer.Option(None, help="[sorting] List length."),
    length: Optional[int] = typer.Option(None, help="[induction, previous-token] Sequence length."),
    n_examples: Optional[int] = typer.Option(None, help="[sequences] Number of sequences."),
    n: Optional[int] = typer.Option(None, help="[memorization] Integers per side of a pair."),
    n_classes: Optional[int] = typer.Option(None, help="[memorization] Number of random labels."),
    d_model: Optional[int] = typer.Option(None, help="[transformer] Override the default width."),
    n_layers: Optional[int] = typer.Option(None, help="[transformer] Override the default depth."),
    n_heads: Optional[int] = typer.Option(None, help="[transformer] Override the default head count."),
    d_mlp: Optional[int] = typer.Option(None, help="[transformer] Override the default MLP width."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (default: $INTERPLAB_DATA or ../shared/data)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a model on a task, writing config.json, metrics.jsonl, checkpoints/ and model.safetensors."""
    from interplab.errors import check
    from interplab.models import model_from_config_dict
    from interplab.tasks import make_task
    from interplab.train import TrainConfig, resume_run, train

    if resume:
        _, result = resume_run(out, data_dir=data_dir, quiet=quiet)
        _print_final(out, result.final, result.stopped_early)
        return
    check(task in TASKS, f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    spec = TASKS[task]
    given = {"p": p, "frac_train": frac_train, "labels": labels, "n_values": n_values, "k": k, "length": length,
             "n_examples": n_examples, "n": n, "n_classes": n_classes}
    for name, value in given.items():
        check(value is None or name in spec["options"],
              f"--{name.replace('_', '-')} does not apply to {task} (its options: "
              f"{', '.join('--' + o.replace('_', '-') for o in spec['options'])}).")
    params = {k_: v for k_, v in given.items() if v is not None}
    the_task = make_task({"name": task, **spec["fixed"], **params, "seed": seed}, data_dir=data_dir)
    model_cfg = the_task.default_model_config()
    overrides = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "d_mlp": d_mlp}
    overrides = {k_: v for k_, v in overrides.items() if v is not None}
    if overrides:
        check(hasattr(model_cfg, "d_model"), f"Model size options apply to transformer tasks, not {task}.")
        model_cfg = dataclasses.replace(model_cfg, **overrides)
    model = model_from_config_dict({"class": "Transformer" if hasattr(model_cfg, "d_model") else "MLP",
                                    "seed": seed, "cfg": dataclasses.asdict(model_cfg)})
    defaults = spec["train"]
    cfg = TrainConfig(
        epochs=epochs if epochs is not None else defaults["epochs"],
        lr=lr if lr is not None else defaults["lr"],
        weight_decay=weight_decay if weight_decay is not None else defaults["weight_decay"],
        betas=(beta1, beta2), batch_size=batch_size if batch_size is not None else defaults.get("batch_size"),
        schedule=schedule, warmup_epochs=warmup_epochs, seed=seed, log_every=min(log_every, 50),
        checkpoint_every=min(checkpoint_every, 100), patience=patience, stop_loss=stop_loss,
        stop_patience=stop_patience,
    )
    if not quiet:
        source = the_task.extras.get("source")
        typer.echo(f"task {task}" + (f" (labels: {source})" if source else "") + f", {len(the_task.train_idx)} train / "
                   f"{len(the_task.test_idx)} test examples, {sum(q.numel() for q in model.parameters())} parameters")
    result = train(model, the_task, cfg, out, quiet=quiet)
    _print_final(out, result.final, result.stopped_early)


def _print_final(out: Path, final: dict[str, Any], stopped_early: bool) -> None:
    shown = ", ".join(f"{k_} {v:.4g}" if isinstance(v, float) else f"{k_} {v}" for k_, v in final.items())
    typer.echo(("stopped early: " if stopped_early else "done: ") + shown)
    typer.echo(f"run directory: {out}")


@app.command()
def info(run_dir: Path = typer.Argument(..., help="A run directory written by `interplab train`.")) -> None:
    """Print a run's configuration and its last logged metrics."""
    from interplab.runs import read_json

    from interplab.errors import check

    check(run_dir.is_dir(), f"Run directory {run_dir} does not exist.")
    config = read_json(run_dir / "config.json")
    typer.echo(f"run: {run_dir}")
    typer.echo(json.dumps(config, indent=2))
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
        if lines:
            typer.echo(f"last metrics ({len(lines)} logged):")
            typer.echo(json.dumps(json.loads(lines[-1]), indent=2))
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        history = sorted(ckpt.glob("epoch_*.safetensors"))
        typer.echo(f"checkpoints: {len(history)} in history" + (f", latest {history[-1].name}" if history else ""))


def main() -> None:
    """Entry point: run the app; user errors become one sentence on stderr and exit code 2."""
    try:
        _register()
        app()
    except InterplabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; completed checkpoints are kept, rerun with --resume to continue.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
