"""``interplab sae``: train, evaluate and browse sparse autoencoders on a trained run's site.

``sae train`` reads a site of a run's model on its task's inputs, or, for a language model (a
run of ``interplab train lm``, or any causal LM given with ``--model``), every token position
of token rows streamed through an :class:`interplab.sae.store.ActivationStore` (BOS excluded
unless ``--include-bos``; ``--positions`` picks positions), in memory or, with ``--shards``,
from safetensors shards on disk with memory bounded by the buffer and one shard.

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

from interplab.devices import model_device
from interplab.errors import check
from interplab.lm.load import load_option, model_option
from interplab.options import NumberList, number, with_placement
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


class _Rows:
    """The first ``n`` rows of a token dataset (``__len__`` and ``rows(index)``), without loading them."""

    def __init__(self, data: Any, n: int) -> None:
        self.data, self.n = data, n

    def __len__(self) -> int:
        return self.n

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        check(len(index) == 0 or int(index.max()) < self.n, f"row index out of range 0..{self.n - 1}.")
        return self.data.rows(index)


def _hook_name(site: Optional[str], layer: Optional[int]) -> str:
    """``--site`` as given, or, with ``--layer``, a short TransformerLens name (``resid_pre``,
    ``mlp_out``, ``post`` ...) expanded by ``get_act_name``; ``--layer`` alone: ``resid_pre``."""
    check(site is not None or layer is not None, "Name the activation site: --site HOOK_NAME, or --layer L "
          "(with an optional short --site such as resid_post or mlp_out).")
    if layer is None:
        return str(site)
    check(site is None or "." not in site, f"--site {site!r} is a full hook name already; drop --layer, or give "
          "a short name such as resid_pre with it.")
    from transformer_lens.utilities import get_act_name

    return get_act_name(site or "resid_pre", layer)


def _lm_tokens(model: Any, tokenizer: Any, task: Any, text: Optional[str], n_ctx: Optional[int],
               out: Path, quiet: bool) -> Any:
    """Token rows ``[BOS] + n_ctx - 1`` tokens for a language model: the run's corpus, or ``text``
    (a text or JSONL file, ``hf:NAME``, or a generated corpus directory) tokenized into ``out/tokens.bin``."""
    from interplab.lm.tokens import TokenDataset, documents, write_token_file

    model_ctx = int(model.cfg.n_ctx)
    length = n_ctx if n_ctx is not None else min(model_ctx, 128)
    check(2 <= length <= model_ctx, f"--n-ctx must be between 2 and the model's context of {model_ctx}, got {length}.")
    if text is None:
        check(task is not None, "A language model given with --model needs --text: the documents to read it on.")
        return TokenDataset(Path(task.corpus) / "tokens.bin", length)
    source = Path(text) / "corpus.txt" if Path(text).is_dir() else text
    check(str(source).startswith("hf:") or Path(source).is_file(), f"No documents at {text} (a text or JSONL file, "
          "hf:NAME, or a corpus directory with corpus.txt).")
    return TokenDataset(write_token_file(documents(source), tokenizer, out / "tokens.bin", quiet=quiet), length)


def _lm_store(model: Any, hook: str, tokens: Any, positions: Optional[tuple[int, ...]], include_bos: bool,
              shards: Optional[Path], shard_rows: int, model_batch: int, cfg: SAETrainConfig, placement: Any,
              quiet: bool) -> Any:
    """An :class:`ActivationStore` over ``tokens``, from the model or from shards written (or found) in ``shards``."""
    from interplab.io import read_json
    from interplab.sae.store import STORE_FILENAME, ActivationStore, write_shards

    n_ctx = tokens.rows(torch.arange(1)).shape[1]
    if positions is not None:
        check(all(-n_ctx <= p < n_ctx for p in positions), f"--positions {positions} are out of range for rows of "
              f"{n_ctx} tokens.")
    if shards is None:
        return ActivationStore.from_model(model, hook, tokens, torch.Generator(), positions=positions,
                                          exclude_bos=not include_bos, size=cfg.buffer_size, model_batch=model_batch)
    if (shards / STORE_FILENAME).is_file():  # reuse shards of this very site and positions
        meta = read_json(shards / STORE_FILENAME)
        want = {"hook_name": hook, "positions": None if positions is None else list(positions),
                "exclude_bos": not include_bos}
        check(all(meta.get(k) == v for k, v in want.items()), f"{shards} holds shards of another site or other "
              "positions; choose another --shards directory.")
    else:
        write_shards(model, hook, tokens, shards, positions=positions, exclude_bos=not include_bos,
                     model_batch=model_batch, shard_rows=shard_rows, seed=cfg.seed, quiet=quiet)
    return ActivationStore.from_shards(shards, torch.Generator(), size=cfg.buffer_size, device=placement.torch_device)


@app.command("train")
@with_placement
def train_command(
    run: Optional[Path] = typer.Option(None, "--run", help="A run directory written by `interplab train` (model and "
                                       "task; a run of `interplab train lm` is read at every token position)."),
    model_name: Optional[str] = model_option(help="Instead of --run: a causal language model (local Hugging Face "
                                             "directory or hub name) loaded by interplab.lm.load; needs --text."),
    site: Optional[str] = typer.Option(None, "--site", help="Activation site (TransformerLens name), e.g. "
                                       "blocks.0.mlp.hook_post; with --layer a short name such as resid_post."),
    layer: Optional[int] = number(None, "--layer", "Layer of the site: --site resid_pre (the default), mlp_out, "
                                  "post ... at this layer.", ge=0, le=1024),
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
    resample_every: int = number(_D.resample_every, "--resample-every", "With --dead-fix resample: steps between resamplings.", ge=1),
    buffer_size: int = number(_D.buffer_size, "--buffer-size", "Rows in the shuffled activation buffer.", ge=2,
                              le=1 << 24),
    checkpoint_every: int = number(_D.checkpoint_every, "--checkpoint-every", "Steps between checkpoints.", ge=1),
    seed: int = number(_D.seed, "--seed", "Seed for the initialisation, the buffer and resampling.", ge=0),
    autocast: bool = typer.Option(_D.autocast, help="Run the SAE's forward pass under bfloat16 autocast."),
    tf32: bool = typer.Option(_D.tf32, help="Allow TF32 matmuls (CUDA only)."),
    text: Optional[str] = typer.Option(None, "--text", help="Language models: documents to read the model on: a "
                                       "text file (one per line), a .jsonl file, hf:NAME, or a corpus directory; "
                                       "default for a run of `interplab train lm`: its corpus's tokens."),
    n_ctx: Optional[int] = number(None, "--n-ctx", "Language models: tokens per row, BOS included (default: the "
                                  "model's context, at most 128).", ge=2, le=1 << 20),
    max_rows: Optional[int] = number(None, "--max-rows", "Language models: use only the first N token rows.", ge=1),
    positions: Optional[str] = typer.Option(None, "--positions", help="Language models: comma-separated token "
                                            "positions to keep (negative from the end); default: every position.",
                                            parser=NumberList(int, "--positions", ge=-65536, le=65536)),
    include_bos: bool = typer.Option(False, "--include-bos", help="Language models: keep position 0 (BOS)."),
    shards: Optional[Path] = typer.Option(None, "--shards", help="Language models: write the activations once to "
                                          "safetensors shards in this directory (or reuse them) and train from disk."),
    shard_rows: int = number(65536, "--shard-rows", "Language models: rows per shard: memory holds about "
                             "1.5 x --buffer-size + --shard-rows rows.", ge=1, le=1 << 26),
    model_batch: int = number(32, "--model-batch", "Language models: token rows per forward pass.", ge=1, le=1 << 16),
    resume: bool = typer.Option(False, "--resume", help="Continue the SAE run in --out (same options)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (default: $INTERPLAB_DATA or ../shared/data)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    placement: Any = None,
) -> None:
    """Train an SAE on a site of a trained run or a language model; leaves an SAELens-layout directory in --out."""
    from interplab.instrument import Site
    from interplab.sae.buffer import collect
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import SAETrainConfig, make_buffer, train_sae

    check((run is None) != (model_name is None), "Give exactly one of --run RUN_DIR and --model NAME_OR_DIR.")
    hook = _hook_name(site, layer)
    tokenizer = None
    if run is not None:
        model, task, _ = _load_run(run, data_dir, placement)
        is_lm = getattr(task, "name", None) == "lm"
        tokenizer = getattr(task, "tokenizer", None)
    else:
        model, tokenizer = load_option(model_name, device=str(placement.torch_device), dtype=placement.dtype)
        task, is_lm = None, True
    source = str(run if run is not None else model_name)
    cfg = SAETrainConfig(steps=steps, batch_size=batch_size, lr=lr, betas=(beta1, beta2), l1_coeff=l1,
                         l1_warmup_steps=l1_warmup_steps, buffer_size=buffer_size, dead_fix=dead_fix,
                         dead_window=dead_window, resample_every=resample_every, seed=seed,
                         checkpoint_every=checkpoint_every, log_every=min(100, checkpoint_every), autocast=autocast,
                         tf32=tf32)
    lm_only = {"--text": text, "--n-ctx": n_ctx, "--max-rows": max_rows, "--positions": positions,
               "--shards": shards, "--include-bos": include_bos or None}
    if not is_lm:
        given = [flag for flag, v in lm_only.items() if v is not None]
        check(not given, f"{', '.join(given)} apply to language models only; the task of {run} is not one.")
        hooks = model.mod_dict
        check(hook in hooks, f"The model of {run} has no activation site named {hook!r}.")
        the_site = Site(hook, _default_position(task, position))
        sampler = _sampler(task, source)
        probe = sampler(torch.Generator().manual_seed(seed), 2)
        width = collect(model, _checked_position(model, the_site, probe), probe).shape[1]
        buffer, scale, held_out = make_buffer(model, the_site, sampler, cfg), 1.0, None
    else:
        check(position is None, "--position is for single-position sites; for a language model use --positions.")
        out.mkdir(parents=True, exist_ok=True)
        data = _lm_tokens(model, tokenizer, task, text, n_ctx, out, quiet)
        n = len(data) if max_rows is None else min(max_rows, len(data))
        n_train = n - min(8, n // 4)  # the last rows are held out for the loss-recovered check
        check(n_train >= 1, "There are too few token rows to train on; give more --text.")
        buffer = _lm_store(model, hook, _Rows(data, n_train), positions, include_bos, shards, shard_rows, model_batch,
                           cfg, placement, quiet)
        width, scale, held_out = buffer.d, buffer.scale, data.rows(torch.arange(n_train, n))
        the_site = Site(hook, None)
    sae = SAE(SAEConfig(d_in=width, d_sae=d_sae if d_sae is not None else expansion * width, hook_name=hook,
                        position=the_site.position, act_scale=scale), seed=seed)
    placement.apply(sae)
    result = train_sae(sae, buffer, cfg, out, resume=resume, quiet=quiet, model_name=source)
    final = dict(result.final)
    if held_out is not None and len(held_out):
        from interplab.sae.metrics import lm_loss_recovered

        device = model_device(model)
        final["loss_recovered"] = lm_loss_recovered(model, held_out.to(device), sae, site=buffer.site)["recovered_zero"]
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
