"""Training progress over a run's weight history: per-checkpoint measures and grokking phases.

After Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability":
the restricted loss (logits kept only on the key frequencies) and the excluded loss (key
frequencies removed, on the training pairs) are tracked over the saved checkpoints, and the
phases are read from the training log: memorisation (train accuracy reaches a level), the
test-loss drop (the first checkpoint below half its value at memorisation) and the one before it.

Example:
    >>> first_epoch([{"epoch": 10, "acc": 0.5}, {"epoch": 20, "acc": 0.995}], "acc", 0.99)
    20
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from interplab.analysis.fourier import progress_measures
from interplab.instrument import cache
from interplab.io import PathLike, load_state_into, load_tensors


def first_epoch(metrics: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    """The first logged epoch whose ``key`` is at least ``threshold`` (a missing key counts as 0), or None.

    Example:
        >>> first_epoch([{"epoch": 5}], "test_acc", 0.99) is None
        True
    """
    return next((m["epoch"] for m in metrics if m.get(key, 0.0) >= threshold), None)


def modular_logits_table(model: Any, task: Any, site: str = "blocks.0.mlp.hook_post") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[p, p, p]`` and ``site`` activations ``[p, p, d]`` at the last position, all pairs.

    ``task``: a modular-arithmetic task (:func:`interplab.tasks.modular.modular_task`) whose
    inputs are every pair in order.

    Example:
        >>> from interplab.models import Transformer
        >>> from interplab.tasks.modular import modular_task
        >>> task = modular_task(p=5, frac_train=0.5, seed=0)
        >>> logits, acts = modular_logits_table(Transformer(task.default_model_config(), seed=0), task)
        >>> tuple(logits.shape), tuple(acts.shape[:2])
        ((5, 5, 5), (5, 5))
    """
    p = task.n_classes
    with torch.no_grad():
        logits, acts = cache(model, task.inputs, names=[site], positions=[-1])
    return logits[:, 0].reshape(p, p, p), acts[site][:, 0].reshape(p, p, -1)


def checkpoint_series(probe: Any, task: Any, checkpoint_dir: PathLike, keys: list[int]) -> dict[str, list[float]]:
    """Progress measures of every ``epoch_*.safetensors`` checkpoint in ``checkpoint_dir``, in name order.

    Each checkpoint is loaded into ``probe`` (a model of the run's architecture). Returns lists
    ``epoch``, ``restricted_loss``, ``excluded_loss`` (on ``keys``, default ``[1]`` when empty,
    :func:`interplab.analysis.fourier.progress_measures`), ``train_loss``, ``test_loss`` and
    ``weight_norm`` (L2 norm of all parameters and buffers); empty lists when there are none.

    Example:
        >>> import tempfile
        >>> from interplab.models import Transformer
        >>> from interplab.tasks.modular import modular_task
        >>> task = modular_task(p=5, frac_train=0.5, seed=0)
        >>> checkpoint_series(Transformer(task.default_model_config()), task, tempfile.mkdtemp(), [1])["epoch"]
        []
    """
    series: dict[str, list[float]] = {k: [] for k in ("epoch", "restricted_loss", "excluded_loss", "train_loss",
                                                      "test_loss", "weight_norm")}
    for path in sorted(Path(checkpoint_dir).glob("epoch_*.safetensors")):
        load_state_into(probe, load_tensors(path), path)
        probe.eval()
        table, _ = modular_logits_table(probe, task)
        pm = progress_measures(table, keys or [1], task.train_idx)
        ev = task.evaluate(probe)
        series["epoch"].append(int(path.stem.split("_")[1]))
        series["restricted_loss"].append(pm["restricted_loss"])
        series["excluded_loss"].append(pm["excluded_loss"])
        series["train_loss"].append(ev["train_loss"])
        series["test_loss"].append(ev["test_loss"])
        series["weight_norm"].append(math.sqrt(sum(t.pow(2).sum().item() for t in probe.state_dict().values())))
    return series


def grokking_phases(epochs: list[int], test_loss: list[float], epoch_memorized: int | None) -> tuple[int, int, int]:
    """Checkpoint indices of memorisation, of the test-loss drop, and of the checkpoint just before the drop.

    Memorisation: the first checkpoint at or after ``epoch_memorized`` (0 when None); the drop:
    the first checkpoint from there whose test loss is below half its value at memorisation
    (the last checkpoint when none is); before the drop: the one before it, not before memorisation.

    Example:
        >>> grokking_phases([0, 10, 20, 30, 40], [3.0, 4.0, 3.5, 1.0, 0.1], 10)
        (1, 3, 2)
    """
    i_mem = next((i for i, e in enumerate(epochs) if epoch_memorized is not None and e >= epoch_memorized), 0)
    drop_level = 0.5 * test_loss[i_mem] if epochs else 0.0
    i_drop = next((i for i in range(i_mem, len(epochs)) if test_loss[i] < drop_level), len(epochs) - 1)
    return i_mem, i_drop, max(i_mem, i_drop - 1)


__all__ = ["first_epoch", "modular_logits_table", "checkpoint_series", "grokking_phases"]
