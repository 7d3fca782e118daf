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

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import typer

from interplab.errors import InterplabError

app = typer.Typer(
    help="interplab: train small networks, look inside them, and test explanations causally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Train a model on a task; every task writes config.json, metrics.jsonl, checkpoints/ and "
    "model.safetensors into --out, and --resume continues an interrupted run exactly.",
    no_args_is_help=True,
)
study_app = typer.Typer(
    help="Reproduce a published result end to end; each study writes results.json and report.html.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")
app.add_typer(study_app, name="study")

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
