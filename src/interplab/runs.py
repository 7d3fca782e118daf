"""Run directories: a model's config and weights on disk, and loading models back.

A run directory holds ``config.json`` (model class and config, task, training config),
``model.safetensors`` (final weights), ``checkpoints/``, ``metrics.jsonl``, and for studies
``results.json`` and ``report.html``. Writes are atomic (see :mod:`interplab.io`).

Example:
    >>> import tempfile, torch
    >>> from interplab.models import MLP, MLPConfig
    >>> from interplab.runs import save_model, load
    >>> d = tempfile.mkdtemp()
    >>> m = MLP(MLPConfig(d_in=4, d_hidden=[8], d_out=2))
    >>> save_model(d, m)
    >>> m2 = load(d)
    >>> bool(torch.equal(m.layers[0].W, m2.layers[0].W))
    True
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import torch

from interplab.devices import dtype_name, model_device, model_dtype, resolve_device, resolve_dtype
from interplab.errors import check
from interplab.io import (PathLike, atomic_write_bytes, atomic_write_json, jsonable, load_state_into, load_tensors,
                          load_torch, read_json, save_tensors, save_torch)
from interplab.models import model_config_dict, model_from_config_dict


def save_model(run_dir: PathLike, model: torch.nn.Module, extra_config: dict[str, Any] | None = None) -> None:
    """Save ``model`` into ``run_dir``: weights to ``model.safetensors``, config to ``config.json``.

    ``extra_config`` (task, training settings) is stored beside the model config, and ``placement``
    (the model's device and dtype: :func:`load` restores the dtype). An existing ``config.json``
    keeps its other keys.

    Example: see the module docstring.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    config = read_json(cfg_path) if cfg_path.exists() else {}
    config["model"] = model_config_dict(model)
    config["placement"] = {"device": str(model_device(model)), "dtype": dtype_name(model_dtype(model))}
    if extra_config:
        config.update(extra_config)
    atomic_write_json(cfg_path, config)
    save_tensors(run_dir / "model.safetensors", model.state_dict())


def load(run_dir: PathLike, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> torch.nn.Module:
    """Rebuild the model saved in ``run_dir`` (config from ``config.json``, final weights).

    The weights are read on the CPU whatever device they were trained on, then the model is
    moved to ``device`` (``auto``, ``cpu``, ``cuda``, ``mps``) and ``dtype`` when given
    (default: CPU, and the dtype the run was trained in, as recorded in ``config.json``).

    Example: see the module docstring.
    """
    run_dir = Path(run_dir)
    check(run_dir.is_dir(), f"Run directory {run_dir} does not exist.")
    config = read_json(run_dir / "config.json")
    check("model" in config, f"{run_dir / 'config.json'} has no model entry.")
    model = model_from_config_dict(config["model"])
    path = run_dir / "model.safetensors"
    stored = config.get("placement", {}).get("dtype", "float32")
    model.to(resolve_dtype(dtype if dtype is not None else stored))
    load_state_into(model, load_tensors(path), path)
    if device is not None:
        model.to(resolve_device(device))
    model.eval()
    return model


# -- training runs: checkpoint, metrics log, resume and the stored-settings check -----------------

def state_path(out_dir: PathLike) -> Path:
    """Where a run directory keeps its latest full training state.

    Example:
        >>> state_path("runs/x").as_posix()
        'runs/x/checkpoints/state.pt'
    """
    return Path(out_dir) / "checkpoints" / "state.pt"


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a training state written by a training loop, with a one-sentence error if corrupt.

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


def check_settings(stored_path: PathLike, wanted: dict[str, Any]) -> None:
    """Refuse (one sentence) when the settings stored in ``stored_path`` differ from ``wanted``
    in any of ``wanted``'s top-level keys (compared as JSON); the run policy of
    :func:`interplab.train.train_or_resume` and :func:`interplab.sae.train.train_sae_or_resume`.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "config.json")
        >>> atomic_write_json(p, {"train": {"epochs": 10}, "model": {}})
        >>> check_settings(p, {"train": {"epochs": 10}})
        >>> check_settings(p, {"train": {"epochs": 20}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The run in ... was made with other settings (train.epochs: 10 there, 20 now); choose another --out or delete it.
    """
    stored = read_json(stored_path)
    wanted = json.loads(json.dumps(jsonable(wanted)))
    diffs: list[str] = []

    def walk(a: Any, b: Any, name: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{name}.{k}" if name else k)
        elif a != b:
            diffs.append(f"{name}: {json.dumps(a)} there, {json.dumps(b)} now")

    for key, value in wanted.items():
        walk(stored.get(key), value, key)
    check(not diffs, f"The run in {Path(stored_path).parent} was made with other settings ({'; '.join(diffs[:3])}); "
          "choose another --out or delete it.")


class RunLog:
    """The checkpoint-and-metrics writer shared by the training loops.

    ``RunLog(out_dir, resume)`` loads ``checkpoints/state.pt`` when ``resume`` (``state``,
    ``start`` and the ``metrics`` logged up to it), or refuses an ``out_dir`` that already
    holds a checkpoint. Used as a context manager it rewrites ``metrics.jsonl`` without the
    rows past the checkpoint (they will be logged again) and appends every :meth:`log`-ged
    row; :meth:`checkpoint` replaces ``state.pt`` atomically and, given weights, adds them to
    the history ``checkpoints/epoch_XXXXXX.safetensors``. ``out_dir=None`` keeps metrics in
    memory only. ``key`` names the counter (``epoch`` or ``step``); the state stores it as
    ``epoch``.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> with RunLog(d, resume=False) as log:
        ...     log.log({"epoch": 1, "loss": 0.5})
        ...     log.checkpoint({"epoch": 1, "model": {}, "optimizer": {}, "generator": torch.Generator().get_state()})
        >>> again = RunLog(d, resume=True)
        >>> again.start, again.metrics
        (1, [{'epoch': 1, 'loss': 0.5}])
        >>> RunLog(d, resume=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: ... already holds a training run; pass --resume to continue it or choose another --out.
    """

    def __init__(self, out_dir: PathLike | None, resume: bool, key: str = "epoch", what: str = "training run") -> None:
        self.out = Path(out_dir) if out_dir is not None else None
        self.key = key
        self.state: dict[str, Any] | None = None
        self.metrics: list[dict[str, Any]] = []
        self._file: Any = None
        if resume:
            check(self.out is not None, "resume needs an output directory.")
            assert self.out is not None
            self.state = load_checkpoint(state_path(self.out))
            self.metrics = read_metrics(self.out / "metrics.jsonl", self.start, key=key)
        elif self.out is not None:
            check(not state_path(self.out).exists(),
                  f"{self.out} already holds a {what}; pass --resume to continue it or choose another --out.")

    @property
    def start(self) -> int:
        """The epoch (or step) the checkpoint was taken at; 0 for a fresh run."""
        return int(self.state["epoch"]) if self.state is not None else 0

    @property
    def finished(self) -> bool:
        """Whether the resumed run had already reached its end."""
        return bool(self.state is not None and self.state.get("finished"))

    @property
    def elapsed(self) -> float:
        """Training seconds logged before this process (the last row's ``time``)."""
        return float(self.metrics[-1]["time"]) if self.metrics else 0.0

    def __enter__(self) -> "RunLog":
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics).encode())
            self._file = open(self.out / "metrics.jsonl", "a")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def log(self, row: dict[str, Any]) -> None:
        """Keep ``row`` and append it to ``metrics.jsonl`` (flushed)."""
        self.metrics.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def checkpoint(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None = None) -> None:
        """Replace ``checkpoints/state.pt`` by ``state``; with ``weights``, add them to the history."""
        if self.out is None:
            return
        save_torch(state_path(self.out), state)
        if weights is not None:
            save_tensors(self.out / "checkpoints" / f"epoch_{int(state['epoch']):06d}.safetensors", weights)
