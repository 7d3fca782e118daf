"""Tasks: deterministic datasets with a train/test split, usable as training objectives.

A :class:`Task` holds every input and label of a finite task, the split (by seed), and for
sequence models the readout positions where the loss is taken. It follows the
:class:`interplab.train.Objective` protocol, so ``train(model, task, cfg)`` works for all.

Generators: :func:`interplab.tasks.modular.modular_task`, :func:`interplab.tasks.pair_labels.pair_label_task`,
:mod:`interplab.tasks.sequences` (sorting, min/max, induction, previous token),
:func:`interplab.tasks.memorization.memorization_task`, :mod:`interplab.tasks.mnist`.

Example:
    >>> from interplab.tasks.modular import modular_task
    >>> task = modular_task(p=7, frac_train=0.5, seed=0)
    >>> task.inputs.shape, task.labels.shape, len(task.train_idx) + len(task.test_idx)
    (torch.Size([49, 3]), torch.Size([49]), 49)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from interplab.devices import model_device, resolve_device
from interplab.errors import check
from interplab.instrument import predict

IGNORE = -100
"""Label of a readout position without a target (``F.cross_entropy``'s default ignore index)."""


def split_indices(n: int, frac_train: float, seed: int) -> tuple[Tensor, Tensor]:
    """A random split of ``range(n)`` into train and test indices (sorted), by seed.

    Example:
        >>> tr, te = split_indices(10, 0.3, seed=0)
        >>> len(tr), len(te), sorted(tr.tolist() + te.tolist()) == list(range(10))
        (3, 7, True)
    """
    check(0.0 < frac_train <= 1.0, f"frac_train must be in (0, 1], got {frac_train}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(round(frac_train * n)))
    return perm[:k].sort().values, perm[k:].sort().values


def _loss_precision(logits: Tensor) -> Tensor:
    """Logits in at least float32 for the loss (bfloat16 is promoted; float64 stays float64)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@dataclass
class Task:
    """A finite supervised task; see the module docstring.

    ``inputs``: tokens [N, pos] (long) for sequence models, or features [N, ...] (float).
    ``labels``: [N] (one readout position or a non-sequence model) or [N, P] (P positions).
    ``positions``: readout positions for sequence models (negative allowed), else None.
    A label of ``-100`` (``IGNORE``) marks a readout position without a target: loss and
    accuracy skip it.
    ``params``: everything needed to rebuild the task (stored in config.json).
    """

    name: str
    inputs: Tensor
    labels: Tensor
    train_idx: Tensor
    test_idx: Tensor
    n_classes: int
    positions: list[int] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(len(self.inputs) == len(self.labels), "inputs and labels must have the same length.")

    # -- data -------------------------------------------------------------------------
    def split(self, which: str) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)`` of ``"train"``, ``"test"`` or ``"all"``."""
        check(which in ("train", "test", "all"), f"split must be train, test or all, got {which!r}.")
        if which == "all":
            return self.inputs, self.labels
        idx = self.train_idx if which == "train" else self.test_idx
        return self.inputs[idx], self.labels[idx]

    def _forward_kwargs(self) -> dict[str, Any]:
        return {} if self.positions is None else {"positions": self.positions}

    def _at_labels(self, out: Tensor) -> Tensor:
        """The model output ``[N, P, C]`` at the readout positions shaped like ``labels``."""
        return out[:, 0] if self.positions is not None and self.labels.dim() == 1 else out

    def logits(self, model: torch.nn.Module, inputs: Tensor) -> Tensor:
        """Model logits at the readout positions: [N, C] or [N, P, C] matching ``labels`` (inputs are
        moved to the model's device)."""
        return self._at_labels(model(inputs.to(model_device(model)), **self._forward_kwargs()))

    def to(self, device: str | torch.device) -> Task:
        """A copy of the task with its tensors (inputs, labels, split, tensor extras) on ``device``.

        ``train`` moves its task to the model's device once, so no epoch copies data.

        Example:
            >>> from interplab.tasks.modular import modular_task
            >>> modular_task(p=5, frac_train=0.5, seed=0).to("cpu").inputs.device
            device(type='cpu')
        """
        dev = resolve_device(device)
        if self.inputs.device == dev:
            return self
        extras = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in self.extras.items()}
        return dataclasses.replace(self, inputs=self.inputs.to(dev), labels=self.labels.to(dev),
                                   train_idx=self.train_idx.to(dev), test_idx=self.test_idx.to(dev), extras=extras)

    # -- Objective protocol -------------------------------------------------------------
    def batches(self, generator: torch.Generator, batch_size: int | None) -> Iterator[Tensor]:
        """Index batches over the training split: full batch, or a seeded permutation."""
        check(batch_size is None or batch_size >= 1, f"batch_size must be at least 1, got {batch_size}.")
        if batch_size is None or batch_size >= len(self.train_idx):
            yield self.train_idx
            return
        # the generator stays on the CPU (same order on every device); the permutation moves
        perm = self.train_idx[torch.randperm(len(self.train_idx), generator=generator).to(self.train_idx.device)]
        yield from perm.split(batch_size)

    def loss(self, model: torch.nn.Module, batch: Tensor) -> Tensor:
        """Mean cross-entropy of the model on the examples ``batch`` (indices)."""
        logits = self.logits(model, self.inputs[batch])
        return F.cross_entropy(_loss_precision(logits.reshape(-1, logits.shape[-1])),
                               self.labels[batch].reshape(-1).to(logits.device))

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (test keys when a test split exists)."""
        out: dict[str, float] = {}
        for which, idx in (("train", self.train_idx), ("test", self.test_idx)):
            if len(idx) == 0:
                continue
            logits = self.logits(model, self.inputs[idx])
            y = self.labels[idx].to(logits.device)
            check(bool((y != IGNORE).any()), f"The {which} split has no labelled readout position (every label is "
                                             f"{IGNORE}), so its loss and accuracy are undefined.")
            out[f"{which}_loss"] = F.cross_entropy(_loss_precision(logits.reshape(-1, logits.shape[-1])), y.reshape(-1)).item()
            keep = y != IGNORE
            out[f"{which}_acc"] = (logits.argmax(-1) == y)[keep].float().mean().item()
        return out

    def describe(self) -> dict[str, Any]:
        """JSON description stored in config.json; :func:`make_task` rebuilds from it."""
        return {"name": self.name, **self.params}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, which: str = "all") -> Tensor:
        """The model's predicted labels on a split.

        Example:
            >>> from interplab.tasks.modular import modular_task
            >>> from interplab.models import Transformer
            >>> t = modular_task(p=5, frac_train=0.4, seed=0)
            >>> t.predict(Transformer(t.default_model_config()), "test").shape
            torch.Size([15])
        """
        return predict(model, self.split(which)[0], readout=lambda out: self._at_labels(out).argmax(-1),
                       **self._forward_kwargs())

    def default_model_config(self) -> Any:
        """The model config this task was designed for (see each generator)."""
        factory = self.extras.get("default_model")
        check(factory is not None, f"Task {self.name} has no default model.")
        return factory()


def make_task(description: dict[str, Any], data_dir: Any = None) -> Any:
    """Rebuild a task or training objective from its ``describe()`` output (used by resume).

    Finite tasks come back as :class:`Task`; ``sparse-features`` (toy models of
    superposition) as :class:`interplab.tasks.superposition.SparseFeatures`.

    Example:
        >>> t = make_task({"name": "modular-addition", "p": 5, "op": "+", "frac_train": 0.5, "seed": 1})
        >>> t.inputs.shape
        torch.Size([25, 3])
    """
    from interplab.tasks.registry import TASKS

    d = dict(description)
    name = d.pop("name", None)
    if name == "sparse-features":
        from interplab.tasks.superposition import from_description

        return from_description(description)
    if name == "lm":
        from interplab.tasks.lm import LMTask

        return LMTask(**d)
    check(name in TASKS, f"Unknown task {name!r} (known: {', '.join(sorted(TASKS))}).")
    if TASKS[name].data_dir:
        d["data_dir"] = data_dir
    return TASKS[name].builder(**d)
