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
import inspect
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
    "fact-finding": "interplab.studies.fact_finding",
    "embeddings": "interplab.studies.embeddings",
    "lm": "interplab.studies.lm",
    "sae-lm": "interplab.studies.sae_lm",
    "circuit-discovery": "interplab.studies.circuit_discovery",
}
# Sub-applications living beside the technique they drive, each exposing ``app``.
SUBAPPS = {"sae": "interplab.sae.cli", "corpus": "interplab.lm.cli", "challenge": "interplab.challenges.cli"}

_REGISTERED: list[bool] = []


def _register() -> None:
    if _REGISTERED:
        return
    _REGISTERED.append(True)
    for name, module_name in STUDIES.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip().splitlines()
        study_app.command(name=name, help=doc[0] if doc else None)(module.cli)
    from interplab.lm.cli import sample_command

    app.command("sample", help=(sample_command.__doc__ or "").splitlines()[0])(sample_command)
    for name, module_name in SUBAPPS.items():
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            app.add_typer(importlib.import_module(module_name).app, name=name)


MODEL_SIZES = ("d_model", "n_layers", "n_heads", "d_mlp")
TRAIN_HELP = {
    "epochs": "Epochs (task default if omitted).", "lr": "AdamW learning rate (task default if omitted).",
    "weight_decay": "AdamW weight decay (task default if omitted).", "betas": "AdamW betas, comma-separated.",
    "batch_size": "Minibatch size (task default; full batch if none).",
    "schedule": "constant, warmup, cosine or linear.", "warmup_epochs": "Linear warm-up epochs.",
    "seed": "Seed for the split, the initialisation and the batch order.", "log_every": "Log metrics every N epochs.",
    "checkpoint_every": "Checkpoint every N epochs.", "keep_history": "Keep a weight snapshot at every checkpoint.",
    "patience": "Stop once train accuracy is 100% and test accuracy has not improved for N epochs (selects on the "
                "test split; prefer --stop-loss).",
    "max_grad_norm": "Clip the gradient norm to this value.",
    "stop_loss": "Stop once the training loss has stayed below this for --stop-patience epochs (training split only).",
    "stop_patience": "Epochs the training loss must stay below --stop-loss.",
}


def _train_params() -> list[inspect.Parameter]:
    """The options of ``interplab train``: task options, TrainConfig fields, model sizes (generated)."""
    from interplab.devices import Placement
    from interplab.options import common, options_from, parameter
    from interplab.tasks.registry import TASKS
    from interplab.train import TrainConfig

    params = [inspect.Parameter("task", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                default=typer.Argument(..., help=f"One of: {', '.join(TASKS)}."))]
    params += common(out_help="Run directory to write (or to continue with --resume).")
    params.append(inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--resume", help="Continue the run in --out to its configured end, with its stored settings "
        "(other options are ignored).")))
    seen: dict[str, Any] = {}
    for spec in TASKS.values():
        for name, opt in spec.options.items():
            seen.setdefault(name, (spec, opt))
    for name, (spec, opt) in seen.items():
        tp = inspect.signature(spec.builder).parameters[name].annotation
        tp = {"int": int, "float": float, "str": str}.get(tp, tp) if isinstance(tp, str) else tp
        params.append(parameter(name, tp, None, opt.help + " (task default if omitted)", opt.bounds))
    task_set = {k for spec in TASKS.values() for k in spec.train}
    params += options_from(TrainConfig, defaults={k: None for k in task_set}, helps=TRAIN_HELP, probe=True)
    for name in MODEL_SIZES:
        params.append(parameter(name, int, None, f"Transformer only: override the default {name}.", {"ge": 1, "le": 65536}))
    params.append(parameter("data_dir", Path, None, "Data directory (default: $INTERPLAB_DATA or ../shared/data)."))
    params += options_from(Placement)
    return params


def _train(task: str, out: Path, quiet: bool, resume: bool, data_dir: Optional[Path], device: str, dtype: str,
           **given: Any) -> None:
    from interplab.devices import Placement
    from interplab.errors import check
    from interplab.models import model_for_config
    from interplab.tasks.registry import TASKS
    from interplab.train import TrainConfig, resume_run, train

    placement = Placement(device, dtype)
    placement.torch_device  # a device this machine lacks is refused before any work
    if resume:
        _, result = resume_run(out, data_dir=data_dir, quiet=quiet, device=placement.torch_device)
        _print_final(out, result.final, result.stopped_early)
        return
    check(task in TASKS, f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    spec = TASKS[task]
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in given.items() if v is not None and k not in train_fields and k not in MODEL_SIZES}
    the_task = spec.build(options, seed=given["seed"], data_dir=data_dir)
    model_cfg = the_task.default_model_config()
    sizes = {k: given[k] for k in MODEL_SIZES if given[k] is not None}
    if sizes:
        names = {f.name for f in dataclasses.fields(model_cfg)}
        unknown = sorted(set(sizes) - names)
        check(not unknown, f"--{unknown[0].replace('_', '-') if unknown else ''} does not apply to the "
              f"{type(model_cfg).__name__} of {task}.")
        model_cfg = dataclasses.replace(model_cfg, **sizes)
    model = placement.apply(model_for_config(model_cfg, seed=given["seed"]))
    settings = {k: given[k] for k in train_fields if given[k] is not None}
    cfg = TrainConfig(**{**spec.train, **settings})
    if not quiet:
        source = the_task.extras.get("source")
        typer.echo(f"task {task}" + (f" (labels: {source})" if source else "") + f", {len(the_task.train_idx)} train / "
                   f"{len(the_task.test_idx)} test examples, {sum(q.numel() for q in model.parameters())} parameters, "
                   f"{placement.dtype} on {placement.torch_device}")
    result = train(model, the_task, cfg, out, quiet=quiet)
    _print_final(out, result.final, result.stopped_early)


def _register_train() -> None:
    from interplab.options import command

    doc = "Train a model on a task, writing config.json, metrics.jsonl, checkpoints/ and model.safetensors."
    app.command("train")(command(_train, _train_params(), doc))


_register_train()


def _print_final(out: Path, final: dict[str, Any], stopped_early: bool) -> None:
    shown = ", ".join(f"{k_} {v:.4g}" if isinstance(v, float) else f"{k_} {v}" for k_, v in final.items())
    typer.echo(("stopped early: " if stopped_early else "done: ") + shown)
    typer.echo(f"run directory: {out}")


@app.command()
def info(run_dir: Path = typer.Argument(..., help="A run directory written by `interplab train`.")) -> None:
    """Print a run's configuration and its last logged metrics."""
    from interplab.io import read_json

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


@app.command("lm-info")
def lm_info(
    model: str = typer.Option(..., "--model", help="A causal language model: a local Hugging Face directory "
                              "(works offline) or a hub name (needs the network)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("float32", help="float32, float64, bfloat16 or float16."),
) -> None:
    """Load a language model through TransformerLens and print its architecture, sizes and sites."""
    from interplab.lm import load

    lm_model, tokenizer = load(model, device=device, dtype=dtype)
    cfg = lm_model.cfg
    n_params = sum(p.numel() for p in lm_model.parameters())
    typer.echo(f"model: {model} ({cfg.architecture})")
    typer.echo(f"layers {cfg.n_layers}, d_model {cfg.d_model}, heads {cfg.n_heads}, d_head {cfg.d_head}, "
               f"vocabulary {cfg.d_vocab}, context {cfg.n_ctx}, {n_params} parameters")
    typer.echo(f"tokenizer: {type(tokenizer).__name__}, {len(tokenizer)} tokens; "
               f"{len(lm_model.hook_dict)} hook names, e.g. blocks.0.hook_resid_pre, blocks.0.attn.hook_z")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app; user errors (bad options included) become one sentence on stderr, exit 2."""
    try:  # typer >= 0.29 carries its own copy of click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on click
        from click.exceptions import NoArgsIsHelpError, UsageError

    try:
        _register()
        code = app(args=argv, standalone_mode=False)
    except NoArgsIsHelpError:  # typer has printed the help
        sys.exit(2)
    except UsageError as e:
        typer.echo(f"error: {_sentence(e.format_message())}", err=True)
        sys.exit(2)
    except InterplabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; completed checkpoints are kept, rerun with --resume to continue.", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _sentence(message: str) -> str:
    """A usage error from the parser as one line ending in a full stop."""
    text = " ".join(message.replace("Value error, ", "").split())
    return text if text.endswith(".") else text + "."


if __name__ == "__main__":
    main()
