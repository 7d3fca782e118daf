"""The one training loop: AdamW, schedules, metrics, atomic checkpoints and exact resume.

``train(model, objective, cfg, out_dir)`` works for every model and task: the objective
says what an epoch's batches are, what the loss is and how to evaluate (see
:class:`Objective`; every :class:`interplab.tasks.Task` is one). With ``out_dir`` it writes

- ``config.json``: model class/config/seed, ``objective.describe()``, the TrainConfig, the
  ``placement`` (device and dtype of the model);
- ``metrics.jsonl``: one JSON object per logged epoch (``epoch``, evaluate() keys, ``lr``, ``time``);
- ``checkpoints/state.pt``: the latest full state (weights, optimizer, data generator, early
  stopping), replaced atomically; ``checkpoints/epoch_XXXXXX.safetensors``: weight history;
- ``model.safetensors``: the final weights.

``resume=True`` continues from ``state.pt`` and ends bitwise-equal to an uninterrupted run:
all randomness after initialisation comes from one ``torch.Generator`` saved in the state.

Training runs where the model lives: move the model first (``model.to("cuda")``,
``model.double()``); an objective with a ``to(device)`` method (every ``Task``) is moved there
once. The data generator stays on the CPU, so a seed gives the same batches on every device.

Example:
    >>> import tempfile
    >>> from interplab.tasks.modular import modular_task
    >>> from interplab.models import Transformer
    >>> task = modular_task(p=5, frac_train=0.6, seed=0)
    >>> model = Transformer(task.default_model_config(), seed=0)
    >>> out = tempfile.mkdtemp()
    >>> result = train(model, task, TrainConfig(epochs=20, log_every=10, checkpoint_every=10), out, quiet=True)
    >>> [m["epoch"] for m in result.metrics], result.epochs_run
    ([1, 10, 20], 20)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from interplab.devices import dtype_name, model_device, model_dtype, resolve_device, resolve_dtype
from interplab.errors import InterplabError, check
from interplab.io import PathLike, atomic_write_bytes, load_torch, read_json, save_tensors, save_torch
from interplab.runs import save_model

SCHEDULES = ("constant", "warmup", "cosine", "linear")


@runtime_checkable
class Objective(Protocol):
    """What ``train`` needs of a task; see docs/DEVELOPING.md."""

    def batches(self, generator: torch.Generator, batch_size: int | None) -> Iterable[Any]: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule, logging and checkpointing settings.

    ``schedule``: ``constant``; ``warmup`` (linear warm-up over ``warmup_epochs`` then
    constant); ``cosine`` or ``linear`` decay to zero after the warm-up. ``batch_size=None``
    is full batch. ``patience``: stop once train accuracy is 1.0 and test accuracy has not
    improved for this many epochs (checked at logged epochs). Metrics are logged at epoch
    1, every ``log_every`` epochs and at the end; checkpoints every ``checkpoint_every``.

    Example:
        >>> TrainConfig(lr=-1)
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: lr must be positive, got -1.
    """

    epochs: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    batch_size: int | None = None
    schedule: str = "constant"
    warmup_epochs: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_history: bool = True
    patience: int | None = None
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}.")
        check(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}.")
        check(self.weight_decay >= 0, f"weight_decay must be non-negative, got {self.weight_decay}.")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two numbers in [0, 1), got {self.betas}.")
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}.")
        check(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        check(self.warmup_epochs >= 0, f"warmup_epochs must be non-negative, got {self.warmup_epochs}.")
        check(self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}.")
        check(self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, got {self.checkpoint_every}.")
        check(self.patience is None or self.patience >= 1, f"patience must be at least 1, got {self.patience}.")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for epoch ``epoch`` (0-based).

        Example:
            >>> c = TrainConfig(epochs=10, lr=1.0, schedule="cosine", warmup_epochs=2)
            >>> [round(c.lr_at(e), 3) for e in (0, 1, 2, 6, 9)]
            [0.5, 1.0, 1.0, 0.5, 0.038]
        """
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        if self.schedule in ("constant", "warmup"):
            return self.lr
        span = max(1, self.epochs - self.warmup_epochs)
        t = (epoch - self.warmup_epochs) / span
        return self.lr * (0.5 * (1 + math.cos(math.pi * t)) if self.schedule == "cosine" else 1 - t)


@dataclass
class TrainResult:
    """What ``train`` returns: the metrics logged (all of them, across resumes)."""

    metrics: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False

    @property
    def final(self) -> dict[str, Any]:
        """The last logged metrics."""
        return self.metrics[-1] if self.metrics else {}


def state_path(out_dir: PathLike) -> Path:
    """Where a run directory keeps its latest full training state.

    Example:
        >>> state_path("runs/x").as_posix()
        'runs/x/checkpoints/state.pt'
    """
    return Path(out_dir) / "checkpoints" / "state.pt"


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a training state written by ``train``, with a one-sentence error if corrupt.

    Example:
        >>> load_checkpoint("/nonexistent/state.pt")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Checkpoint /nonexistent/state.pt does not exist.
    """
    path = Path(path)
    state = load_torch(path, "Checkpoint")
    keys = {"epoch", "model", "optimizer", "generator"}
    check(isinstance(state, dict) and keys <= set(state), f"Checkpoint {path} is incomplete; delete it to start over.")
    return state


def _save_checkpoint(out_dir: Path, state: dict[str, Any], model: torch.nn.Module, keep_history: bool) -> None:
    save_torch(state_path(out_dir), state)
    if keep_history:
        save_tensors(out_dir / "checkpoints" / f"epoch_{state['epoch']:06d}.safetensors", model.state_dict())


def read_metrics(path: PathLike, upto: int, key: str = "epoch") -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` whose ``key`` is at most ``upto`` (rows past a resumed
    checkpoint, and a last line cut by a kill, are dropped: they will be logged again).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
        >>> _ = open(p, "w").write('{"epoch": 1}\\n{"epoch": 5}\\n{"epo')
        >>> read_metrics(p, 3)
        [{'epoch': 1}]
    """
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get(key, 0) <= upto:
            out.append(row)
    return out


def train(
    model: torch.nn.Module,
    objective: Objective,
    cfg: TrainConfig,
    out_dir: PathLike | None = None,
    resume: bool = False,
    quiet: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[dict[str, Any]], bool] | None = None,
) -> TrainResult:
    """Train ``model`` on ``objective``; see the module docstring.

    ``resume=True`` needs ``out_dir`` with a checkpoint (a run that already finished is left
    as it is). Without ``resume``, an ``out_dir`` that already holds a checkpoint is refused
    so no run is overwritten by accident. ``on_log`` is called with every logged metrics row;
    ``stop``, if given, too: training stops early (as with ``patience``) once it returns True.
    """
    check(isinstance(objective, Objective), f"{type(objective).__name__} is not a training objective.")
    out = Path(out_dir) if out_dir is not None else None
    device = model_device(model)
    if callable(getattr(objective, "to", None)):  # a Task: its data moves to the model's device once
        objective = objective.to(device)
    placement = {"device": str(device), "dtype": dtype_name(model_dtype(model))}
    generator = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    start, metrics = 0, []
    best_test, best_epoch = -1.0, 0

    if resume:
        check(out is not None, "resume needs an output directory.")
        assert out is not None
        state = load_checkpoint(state_path(out))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = int(state["epoch"])
        best_test, best_epoch = float(state.get("best_test", -1.0)), int(state.get("best_epoch", 0))
        metrics = read_metrics(out / "metrics.jsonl", start)
        if state.get("finished"):
            return TrainResult(metrics, start, bool(state.get("stopped_early")))
    elif out is not None:
        check(
            not state_path(out).exists(),
            f"{out} already holds a training run; pass --resume to continue it or choose another --out.",
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_model(out, model, {"task": objective.describe(), "train": dataclasses.asdict(cfg), "placement": placement})
        # rewrite metrics.jsonl without rows past the checkpoint (they will be logged again)
        atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics).encode())
        metrics_file = open(out / "metrics.jsonl", "a")
    t0 = time.perf_counter() - (metrics[-1]["time"] if metrics else 0.0)
    stopped_early, done = False, start
    bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, disable=quiet, desc="train", unit="ep")
    try:
        for epoch in bar:
            lr = cfg.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            for batch in objective.batches(generator, cfg.batch_size):
                loss = objective.loss(model, batch)
                if not torch.isfinite(loss):
                    raise InterplabError(
                        f"Training diverged: the loss became {loss.item()} at epoch {epoch + 1}; "
                        "try a lower learning rate."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
            done = epoch + 1
            last = done == cfg.epochs
            if done == 1 or done % cfg.log_every == 0 or last:
                model.eval()
                row = {"epoch": done, **objective.evaluate(model), "lr": lr,
                       "time": round(time.perf_counter() - t0, 3)}
                metrics.append(row)
                if out is not None:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                if on_log is not None:
                    on_log(row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "train_acc", "test_acc")})
                if "test_acc" in row and row["test_acc"] > best_test:
                    best_test, best_epoch = row["test_acc"], done
                if (cfg.patience is not None and row.get("train_acc", 0.0) >= 1.0
                        and done - best_epoch >= cfg.patience):
                    stopped_early = True
                if stop is not None and stop(row):
                    stopped_early = True
            if out is not None and (done % cfg.checkpoint_every == 0 or last or stopped_early):
                state = {"epoch": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "generator": generator.get_state(), "best_test": best_test, "best_epoch": best_epoch,
                         "finished": last or stopped_early, "stopped_early": stopped_early}
                _save_checkpoint(out, state, model, cfg.keep_history)
            if stopped_early:
                break
    finally:
        bar.close()
        if out is not None:
            metrics_file.close()
    model.eval()
    if out is not None:
        save_model(out, model)
    return TrainResult(metrics, done, stopped_early)


def resume_run(out_dir: PathLike, data_dir: Any = None, quiet: bool = False,
               device: str | torch.device | None = None) -> tuple[torch.nn.Module, TrainResult]:
    """Continue the run in ``out_dir`` with its stored model, task and training config, in the
    stored dtype, on ``device`` (default: the device the run was trained on).

    Example:
        >>> resume_run("/nonexistent/run")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Run directory /nonexistent/run does not exist.
    """
    from interplab.models import model_from_config_dict
    from interplab.tasks import make_task

    out = Path(out_dir)
    check(out.is_dir(), f"Run directory {out} does not exist.")
    config = read_json(out / "config.json")
    check({"model", "task", "train"} <= set(config), f"{out / 'config.json'} is not a training run's config.")
    model = model_from_config_dict(config["model"])
    stored = config.get("placement", {})
    model.to(device=resolve_device(device if device is not None else stored.get("device", "cpu")),
             dtype=resolve_dtype(stored.get("dtype", "float32")))
    task = make_task(config["task"], data_dir=data_dir)
    train_cfg = dict(config["train"])
    cfg = TrainConfig(**train_cfg)
    return model, train(model, task, cfg, out, resume=True, quiet=quiet)


__all__ = ["Objective", "TrainConfig", "TrainResult", "train", "resume_run", "load_checkpoint", "read_metrics",
           "state_path"]
