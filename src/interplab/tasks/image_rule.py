"""A binary labeling of 28x28 images by a rule the caller defines, as a training task for a CNN.

Used to make networks "of the same form" as the EIS VII challenge 1 CNN under a hidden rule
one knows: label MNIST images with any function of their pixels, train a (small)
:class:`~interplab.models.ConvNet`, then check that an analysis recovers the rule.

Example:
    >>> import numpy as np
    >>> images = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28)).astype(np.uint8)
    >>> task = image_rule_task(images, lambda x: (x.mean(axis=(1, 2)) > 127).astype(int), frac_train=0.8)
    >>> task.inputs.shape, len(task.train_idx), task.n_classes
    (torch.Size([50, 28, 28]), 40, 2)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from interplab.errors import check
from interplab.models.convnet import ConvNetConfig, pixels_to_input
from interplab.tasks import Task, split_indices


def image_rule_task(
    images: np.ndarray,
    rule: Callable[[np.ndarray], np.ndarray],
    frac_train: float = 0.8,
    seed: int = 0,
    model: ConvNetConfig | None = None,
    name: str = "image-rule",
) -> Task:
    """A :class:`Task` with inputs ``images / 255`` and labels ``rule(images)`` in {0, 1}.

    ``images``: uint8 ``(N, 28, 28)``; ``rule``: uint8 images -> N labels; ``model``: the
    ConvNet config the task suggests (default: the challenge architecture).

    Example: see the module docstring.
    """
    images = np.asarray(images)
    check(images.ndim == 3 and images.shape[1:] == (28, 28) and images.dtype == np.uint8,
          f"images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}.")
    labels = np.asarray(rule(images)).reshape(-1).astype(np.int64)
    check(len(labels) == len(images), f"The rule gave {len(labels)} labels for {len(images)} images.")
    check(bool(np.isin(labels, [0, 1]).all()), "The rule must return labels in {0, 1}.")
    train_idx, test_idx = split_indices(len(images), frac_train, seed)
    cfg = model or ConvNetConfig()
    return Task(
        name=name,
        inputs=pixels_to_input(images),
        labels=torch.as_tensor(labels),
        train_idx=train_idx,
        test_idx=test_idx,
        n_classes=2,
        params={"n": len(images), "frac_train": frac_train, "seed": seed, "positives": float(labels.mean())},
        extras={"default_model": lambda: cfg},
    )


__all__ = ["image_rule_task"]
