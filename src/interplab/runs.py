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

from pathlib import Path
from typing import Any

import torch

from interplab.devices import resolve_device, resolve_dtype
from interplab.errors import check
from interplab.io import PathLike, atomic_write_json, load_state_into, load_tensors, read_json, save_tensors
from interplab.models import model_config_dict, model_from_config_dict


def save_model(run_dir: PathLike, model: torch.nn.Module, extra_config: dict[str, Any] | None = None) -> None:
    """Save ``model`` into ``run_dir``: weights to ``model.safetensors``, config to ``config.json``.

    ``extra_config`` (task, training settings) is stored beside the model config. An existing
    ``config.json`` keeps its other keys.

    Example: see the module docstring.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    config = read_json(cfg_path) if cfg_path.exists() else {}
    config["model"] = model_config_dict(model)
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
