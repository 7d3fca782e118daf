"""``interplab sae``: train, evaluate and browse sparse autoencoders on a trained run's site.

Example:
    >>> from typer.testing import CliRunner
    >>> r = CliRunner().invoke(app, ["--help"])
    >>> r.exit_code, "train" in r.output and "eval" in r.output
    (0, True)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
import typer

from interplab.errors import check
from interplab.options import number, with_placement
from interplab.sae.train import SAETrainConfig

_D = SAETrainConfig()  # the defaults of the options below (one home: the dataclass)

app = typer.Typer(help="Sparse autoencoders: train on a run's activations, evaluate, write feature dashboards.",
                  no_args_is_help=True)


def _load_run(run: Path, data_dir: Optional[Path], placement: Any) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The run's model (on the placement's device and dtype), its task or objective (None if the run has none)
    and its config."""
    from interplab.io import read_json
    from interplab.runs import load

    model = load(run, device=placement.torch_device, dtype=placement.torch_dtype)
    config = read_json(run / "config.json")
    desc = config.get("task")
    if not desc:
        return model, None, config
    if desc.get("name") == "sparse-features":
        module = importlib.import_module("interplab.tasks.superposition")
        return model, module.from_description(desc), config
    from interplab.tasks import make_task

    return model, make_task(desc, data_dir=data_dir), config


def _sampler(task: Any, run: Path) -> Callable[[torch.Generator, int], torch.Tensor]:
    from interplab.sae.buffer import sample_rows

    check(task is not None, f"Run {run} records no task, so there are no inputs to take activations from.")
    if hasattr(task, "inputs"):
        return sample_rows(task.inputs)
    check(hasattr(task, "sample"), f"The task of run {run} can neither list nor sample its inputs.")
    return task.sample


def _default_position(task: Any, position: Optional[int]) -> Optional[int]:
    if position is not None:
        return position
    positions = getattr(task, "positions", None)
    return positions[0] if positions else None


def _eval_inputs(task: Any, n: int, seed: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    if hasattr(task, "inputs"):
        return task.inputs, task.labels
    x = task.sample(torch.Generator().manual_seed(seed), n)
    return x, x


def _loss_fn(task: Any) -> Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    if hasattr(task, "inputs"):
        positions = task.positions

        def ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = out[:, positions] if positions is not None else out
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1).to(logits.device))

        return ce
    if hasattr(task, "importance"):  # toy model of superposition: importance-weighted MSE
        return lambda out, x: (task.importance.to(out.device) * (out - x.to(out)) ** 2).mean(dim=(0, 2)).sum()
    return None


def _checked_position(model: torch.nn.Module, site: Any, inputs: torch.Tensor) -> Any:
    """``site`` after checking that its position exists along axis 1 of the site's activations."""
    from interplab.instrument import Site
    from interplab.sae.buffer import collect

    if site.position is None:
        return site
    n = collect(model, Site(site.name), inputs).shape[0] // len(inputs)
    check(-n <= site.position < n, f"--position {site.position} is out of range for {site.name}, which has "
          f"{n} positions.")
    return site


@app.command("train")
@with_placement
def train_command(
    run: Path = typer.Option(..., "--run", help="A run directory written by `interplab train` (model and task)."),
    site: str = typer.Option(..., "--site", help="Activation site (TransformerLens name), e.g. blocks.0.mlp.hook_post."),
    out: Path = typer.Option(..., "--out", help="Directory to write: SAELens layout (cfg.json, sae_weights.safetensors), "
                             "metrics.jsonl, checkpoints/."),
    position: Optional[int] = number(None, "--position", "Index along axis 1 of the site (token position or TMS "
                                     "instance; negative counts from the end); default: the task's readout position, "
                                     "else all rows.", le=65536, ge=-65536),
    d_sae: Optional[int] = number(None, "--d-sae", "Number of features (default: expansion x site width).", ge=1,
                                  le=1 << 20),
    expansion: int = number(4, "--expansion", "Features per site dimension when --d-sae is not given.", ge=1, le=1024),
    l1: float = number(_D.l1_coeff, "--l1", "L1 coefficient.", float, ge=0, le=1e6),
    l1_warmup_steps: int = number(_D.l1_warmup_steps, "--l1-warmup-steps", "Steps of linear L1 warm-up.", ge=0),
    steps: int = number(_D.steps, "--steps", "Optimizer steps.", ge=1),
    batch_size: int = number(_D.batch_size, "--batch-size", "Activation rows per step.", ge=1, le=1 << 20),
    lr: float = number(_D.lr, "--lr", "Adam learning rate.", float, gt=0, le=10),
    beta1: float = number(_D.betas[0], "--beta1", "Adam beta1.", float, ge=0, lt=1),
    beta2: float = number(_D.betas[1], "--beta2", "Adam beta2.", float, ge=0, lt=1),
    dead_fix: str = typer.Option("none", help="none, resample, ghost-original, ghost-scaled or ghost-dead-only."),
    dead_window: int = number(_D.dead_window, "--dead-window", "Steps without firing after which a feature counts "
                              "as dead.", ge=1),
    resample_every: int = number(_D.resample_every, "--resample-every", "[resample] Steps between resamplings.", ge=1),
    buffer_size: int = number(_D.buffer_size, "--buffer-size", "Rows in the shuffled activation buffer.", ge=2,
                              le=1 << 24),
    checkpoint_every: int = number(_D.checkpoint_every, "--checkpoint-every", "Steps between checkpoints.", ge=1),
    seed: int = number(_D.seed, "--seed", "Seed for the initialisation, the buffer and resampling.", ge=0),
    autocast: bool = typer.Option(_D.autocast, help="Run the SAE's forward pass under bfloat16 autocast."),
    tf32: bool = typer.Option(_D.tf32, help="Allow TF32 matmuls (CUDA only)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the SAE run in --out (same options)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (default: $INTERPLAB_DATA or ../shared/data)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    placement: Any = None,
) -> None:
    """Train an SAE on a site of a trained run; leaves an SAELens-layout directory in --out."""
    from interplab.instrument import Site
    from interplab.sae.buffer import collect
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import SAETrainConfig, make_buffer, train_sae

    model, task, _ = _load_run(run, data_dir, placement)
    check(site in model.mod_dict, f"The model of {run} has no activation site named {site!r}.")
    the_site = Site(site, _default_position(task, position))
    sampler = _sampler(task, run)
    probe = sampler(torch.Generator().manual_seed(seed), 2)
    width = collect(model, _checked_position(model, the_site, probe), probe).shape[1]
    cfg = SAETrainConfig(steps=steps, batch_size=batch_size, lr=lr, betas=(beta1, beta2), l1_coeff=l1,
                         l1_warmup_steps=l1_warmup_steps, buffer_size=buffer_size, dead_fix=dead_fix,
                         dead_window=dead_window, resample_every=resample_every, seed=seed,
                         checkpoint_every=checkpoint_every, log_every=min(100, checkpoint_every), autocast=autocast,
                         tf32=tf32)
    sae = SAE(SAEConfig(d_in=width, d_sae=d_sae if d_sae is not None else expansion * width, hook_name=site, position=the_site.position), seed=seed)
    placement.apply(sae)
    result = train_sae(sae, make_buffer(model, the_site, sampler, cfg), cfg, out, resume=resume, quiet=quiet,
                       model_name=str(run))
    final = result.final
    typer.echo("done: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items()))
    if result.resampled:
        typer.echo(f"resampled: {', '.join(f'{n} at step {s}' for s, n in result.resampled)}")
    typer.echo(f"SAE directory (SAELens layout): {out}")


@app.command("eval")
@with_placement
def eval_command(
    sae_dir: Path = typer.Option(..., "--sae", help="An SAELens-layout SAE directory."),
    run: Path = typer.Option(..., "--run", help="The run whose model the SAE reads."),
    method: str = typer.Option("encoder", help="Readout: encoder, topk, mp, omp or gp."),
    k: Optional[int] = number(None, "--k", "Active features for topk, mp, omp, gp.", ge=1, le=1 << 20),
    site: Optional[str] = typer.Option(None, help="Override the site stored with the SAE."),
    position: Optional[int] = number(None, "--position", "Override the position stored with the SAE.", ge=-65536,
                                     le=65536),
    n_eval: int = number(4096, "--n-eval", "Inputs to sample when the task has no fixed input set.", ge=1,
                         le=1 << 22),
    seed: int = number(0, "--seed", "Seed for sampled evaluation inputs.", ge=0),
    out: Optional[Path] = typer.Option(None, help="Where to write the JSON (default: <sae>/eval_<method>.json)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (default: $INTERPLAB_DATA or ../shared/data)."),
    placement: Any = None,
) -> None:
    """Evaluate an SAE: L0, MSE, variance explained, dead counts, loss recovered when spliced in."""
    from interplab.instrument import Site
    from interplab.io import atomic_write_json
    from interplab.sae.buffer import collect
    from interplab.sae.ito import readout
    from interplab.sae.metrics import (density_counts, feature_density, l0, loss_recovered, mse,
                                       variance_explained)
    from interplab.sae.saelens import load_saelens

    sae = placement.apply(load_saelens(sae_dir))
    model, task, _ = _load_run(run, data_dir, placement)
    name = site or sae.cfg.hook_name
    check(bool(name), f"{sae_dir} does not say which site it reads; pass --site.")
    check(name in model.mod_dict, f"The model of {run} has no activation site named {name!r}.")
    the_site = Site(name, position if position is not None else sae.cfg.position)
    check(task is not None, f"Run {run} records no task, so there are no inputs to evaluate on.")
    inputs, labels = _eval_inputs(task, n_eval, seed)
    _checked_position(model, the_site, inputs[:2])
    acts = collect(model, the_site, inputs)
    check(acts.shape[1] == sae.cfg.d_in, f"The site {name} has width {acts.shape[1]} but the SAE reads {sae.cfg.d_in}.")
    codes, x_hat = readout(sae, acts, method, k)
    result: dict[str, Any] = {"method": method, "k": k, "l0": l0(codes), "mse": mse(acts, x_hat),
                              "variance_explained": variance_explained(acts, x_hat),
                              **density_counts(feature_density(codes))}
    loss_fn = _loss_fn(task)
    if loss_fn is not None and labels is not None:
        rec = loss_recovered(model, inputs, labels, the_site, lambda a: readout(sae, a, method, k)[1], loss_fn)
        result.update({f"loss_{k_}": v for k_, v in rec.items() if not k_.startswith("recovered")})
        result.update({k_: v for k_, v in rec.items() if k_.startswith("recovered")})
    path = out or sae_dir / f"eval_{method}.json"
    atomic_write_json(path, result)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"written: {path}")


@app.command("dashboard")
@with_placement
def dashboard_command(
    sae_dir: Path = typer.Option(..., "--sae", help="An SAELens-layout SAE directory."),
    run: Path = typer.Option(..., "--run", help="The run whose model the SAE reads (its task lists the inputs)."),
    out: Path = typer.Option(..., "--out", help="Directory for index.html and feature_<i>.html."),
    features: Optional[str] = typer.Option(None, help="Comma-separated feature indices (default: the --top-n densest)."),
    top_n: int = number(10, "--top-n", "How many features when --features is not given.", ge=1, le=10_000),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (default: $INTERPLAB_DATA or ../shared/data)."),
    placement: Any = None,
) -> None:
    """Write an HTML dashboard per feature: top inputs, activation histogram, effect on the logits."""
    from interplab.instrument import Site
    from interplab.sae.buffer import collect
    from interplab.sae.dashboard import write_dashboards
    from interplab.sae.saelens import load_saelens

    sae = placement.apply(load_saelens(sae_dir))
    model, task, _ = _load_run(run, data_dir, placement)
    check(task is not None and hasattr(task, "inputs"), f"Run {run} has no fixed input set to rank inputs from.")
    site = Site(sae.cfg.hook_name, sae.cfg.position)
    check(site.name in model.mod_dict, f"The model of {run} has no activation site named {site.name!r}.")
    if features:
        try:
            chosen = [int(v) for v in features.split(",") if v.strip()]
        except ValueError:
            chosen = []
        check(bool(chosen), f"--features must be comma-separated integers, got {features!r}.")
    else:
        density = (sae.encode(collect(model, site, task.inputs)) > 0).float().mean(0)
        chosen = density.argsort(descending=True)[:top_n].tolist()
    index = write_dashboards(sae, model, task.inputs, site, chosen, out,
                             describe=lambda x: " ".join(str(v) for v in x.tolist()))
    typer.echo(f"dashboards: {index}")
