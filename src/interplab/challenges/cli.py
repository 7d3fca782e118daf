"""``interplab challenge``: make a challenge from a seed, solve it blind, score it, or run a suite.

Example:
    >>> from typer.testing import CliRunner
    >>> r = CliRunner().invoke(app, ["--help"])
    >>> r.exit_code, all(c in r.output for c in ("make", "solve", "score", "suite"))
    (0, True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interplab.options import number

app = typer.Typer(help="Generated challenges: a network trained on a hidden rule, solved from its public files and "
                       "scored against the sealed answer.", no_args_is_help=True)

_DATA_HELP = "Data directory (default: $INTERPLAB_DATA or ../shared/data)."


@app.command("make")
def make_command(
    family: str = typer.Option(..., "--family", help="Challenge family: cnn or pairs."),
    seed: int = number(0, "--seed", "Seed of every random draw of the challenge.", int, ge=0),
    out: Path = typer.Option(..., "--out", help="Challenge directory to write (public/ and answer.json)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller network and shorter training (for tests)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Generate a challenge: a network trained on a hidden rule drawn from the seed, its public files and a sealed answer."""
    from interplab.challenges import make, read_challenge

    path = make(family, seed, out, quick=quick, data_dir=data_dir, quiet=quiet)
    info = read_challenge(path)
    typer.echo(f"challenge {family}-{seed}: stated test accuracy {info.get('stated_test_accuracy', float('nan')):.4f}")
    typer.echo(f"public files: {path / 'public'}; sealed answer: {path / 'answer.json'}")


@app.command("solve")
def solve_command(
    challenge: Path = typer.Argument(..., help="A challenge directory (only its public/ folder is read)."),
    out: Path = typer.Option(..., "--out", help="Directory to write solution.json into."),
    quick: bool = typer.Option(False, "--quick", help="Fewer optimisation steps and images in the solver."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Recover a challenge's hidden rule from its public files alone; writes solution.json."""
    from interplab.challenges import solve

    sol = solve(challenge, out, quick=quick, data_dir=data_dir, quiet=quiet)
    typer.echo(f"verdict: {sol['verdict']}; {sol.get('description', '')}")
    typer.echo(f"solution: {out / 'solution.json'}")


@app.command("score")
def score_command(
    challenge: Path = typer.Argument(..., help="A challenge directory with its answer.json."),
    solution: Path = typer.Argument(..., help="A solution directory (or solution.json) written by solve."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_HELP),
) -> None:
    """Compare a solution's rule with the hidden rule and with the network on the full input set."""
    from interplab.challenges import score

    typer.echo(json.dumps(score(challenge, solution, data_dir=data_dir), indent=2))


@app.command("suite")
def suite_command(
    n: int = number(20, "--n", "Number of challenges (the families in turn, seeds 0, 1, ...).", int, ge=1, le=10_000),
    out: Path = typer.Option(..., "--out", help="Suite directory (suite.json, report.html, one folder per challenge); "
                             "a rerun resumes."),
    quick: bool = typer.Option(False, "--quick", help="Quick challenges and solver (for tests and the bench)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Make, solve and score n challenges; writes suite.json and an HTML report with the table."""
    from interplab.challenges import suite

    suite(n, out, quick=quick, data_dir=data_dir, quiet=quiet)
