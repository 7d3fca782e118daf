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
from interplab.io import PathLike, read_json
from interplab.models import model_config_dict
from interplab.numerics import numerics
from interplab.runs import RunLog, check_settings, save_model, state_path

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
    is full batch. ``stop_loss``: stop once the training loss has stayed below it for
    ``stop_patience`` epochs (checked at logged epochs; it looks at the training split only,
    and with :mod:`interplab.numerics` it stops at the same epoch whatever the thread count).
    ``patience`` (older rule, selects on the test split): stop once train accuracy is 1.0 and
    test accuracy has not improved for this many epochs. Metrics are logged at epoch
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
    stop_loss: float | None = None
    stop_patience: int = 100
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
        check(self.stop_loss is None or self.stop_loss > 0, f"stop_loss must be positive, got {self.stop_loss}.")
        check(self.stop_patience >= 1, f"stop_patience must be at least 1, got {self.stop_patience}.")

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
    The loop runs under :func:`interplab.numerics.numerics` (subnormals flushed, deterministic
    algorithms, unless switched off).
    """
    check(isinstance(objective, Objective), f"{type(objective).__name__} is not a training objective.")
    with numerics():
        return _train(model, objective, cfg, out_dir, resume, quiet, on_log, stop)


def _train(model: torch.nn.Module, objective: Objective, cfg: TrainConfig, out_dir: PathLike | None, resume: bool,
           quiet: bool, on_log: Callable[[dict[str, Any]], None] | None,
           stop: Callable[[dict[str, Any]], bool] | None) -> TrainResult:
    device = model_device(model)
    if callable(getattr(objective, "to", None)):  # a Task: its data moves to the model's device once
        objective = objective.to(device)
    placement = {"device": str(device), "dtype": dtype_name(model_dtype(model))}
    run = RunLog(out_dir, resume)
    generator = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    best_test, best_epoch, below_since = -1.0, 0, None
    if run.state is not None:
        state = run.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        best_test, best_epoch = float(state.get("best_test", -1.0)), int(state.get("best_epoch", 0))
        below_since = state.get("below_since")
        if run.finished:
            model.eval()
            return TrainResult(run.metrics, run.start, bool(state.get("stopped_early")))
    if run.out is not None:
        save_model(run.out, model, {"task": objective.describe(), "train": dataclasses.asdict(cfg), "placement": placement})
    start = run.start
    t0 = time.perf_counter() - run.elapsed
    stopped_early, done = False, start
    bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, disable=quiet, desc="train", unit="ep")
    with run:
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
                    run.log(row)
                    if on_log is not None:
                        on_log(row)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                                     if k in ("train_loss", "train_acc", "test_acc")})
                    if "test_acc" in row and row["test_acc"] > best_test:
                        best_test, best_epoch = row["test_acc"], done
                    if (cfg.patience is not None and row.get("train_acc", 0.0) >= 1.0
                            and done - best_epoch >= cfg.patience):
                        stopped_early = True
                    if cfg.stop_loss is not None:
                        below_since = (below_since if below_since is not None else done) \
                            if row["train_loss"] < cfg.stop_loss else None
                        if below_since is not None and done - below_since >= cfg.stop_patience:
                            stopped_early = True
                    if stop is not None and stop(row):
                        stopped_early = True
                if done % cfg.checkpoint_every == 0 or last or stopped_early:
                    run.checkpoint({"epoch": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "generator": generator.get_state(), "best_test": best_test,
                                    "best_epoch": best_epoch, "below_since": below_since,
                                    "finished": last or stopped_early, "stopped_early": stopped_early},
                                   model.state_dict() if cfg.keep_history else None)
                if stopped_early:
                    break
        finally:
            bar.close()
    model.eval()
    if run.out is not None:
        save_model(run.out, model)
    return TrainResult(run.metrics, done, stopped_early)


def train_or_resume(model: torch.nn.Module, objective: Objective, cfg: TrainConfig, out_dir: PathLike,
                    quiet: bool = False, on_log: Callable[[dict[str, Any]], None] | None = None,
                    stop: Callable[[dict[str, Any]], bool] | None = None) -> TrainResult:
    """The run policy of studies: train into ``out_dir``, or continue (or just reload) the run
    there when it was made with the same model, objective and training settings; a run made
    with other settings is refused with one sentence (never silently reused or overwritten).

    Example:
        >>> import tempfile
        >>> from interplab.tasks.modular import modular_task
        >>> from interplab.models import Transformer
        >>> task, out = modular_task(p=5, frac_train=0.6, seed=0), tempfile.mkdtemp()
        >>> cfg = TrainConfig(epochs=4, log_every=2)
        >>> train_or_resume(Transformer(task.default_model_config(), seed=0), task, cfg, out, quiet=True).epochs_run
        4
        >>> m = Transformer(task.default_model_config(), seed=0)
        >>> train_or_resume(m, task, cfg, out, quiet=True).epochs_run  # reloaded, not retrained
        4
        >>> train_or_resume(m, task, TrainConfig(epochs=8), out)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The run in ... was made with other settings (train.epochs: 4 there, 8 now; ...); choose another --out or delete it.
    """
    resume = state_path(out_dir).exists()
    if resume:
        check_settings(Path(out_dir) / "config.json", {"model": model_config_dict(model), "task": objective.describe(),
                                                       "train": dataclasses.asdict(cfg)})
    return train(model, objective, cfg, out_dir, resume=resume, quiet=quiet, on_log=on_log, stop=stop)


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


__all__ = ["Objective", "TrainConfig", "TrainResult", "train", "train_or_resume", "resume_run"]
