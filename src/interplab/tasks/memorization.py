"""Memorization: integer pairs ``(a, b)`` mapped to random labels, as one-hot inputs for an MLP.

Input for the pair ``(a, b)`` is ``concat(onehot(a), onehot(b))`` of length ``2 n``; the label
of each pair is drawn uniformly from ``n_classes`` by seed. With ``frac_train < 1`` some pairs
are held out (for probe experiments; their labels cannot be predicted).

Example:
    >>> t = memorization_task(n=4, n_classes=2, seed=0)
    >>> t.inputs.shape, t.inputs[5].nonzero().flatten().tolist()   # pair (1, 1)
    (torch.Size([16, 8]), [1, 5])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interplab.errors import check
from interplab.models import MLPConfig
from interplab.tasks import Task, split_indices


def memorization_task(n: int = 20, n_classes: int = 2, frac_train: float = 1.0, seed: int = 0,
                      d_hidden: tuple[int, ...] = (256, 256)) -> Task:
    """All ``n * n`` pairs with random labels; default model an MLP with ``d_hidden`` widths.

    Example: see the module docstring.
    """
    check(n >= 1 and n_classes >= 2, "memorization needs n >= 1 and n_classes >= 2.")
    a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    a, b = a.flatten(), b.flatten()
    inputs = torch.cat([F.one_hot(a, n), F.one_hot(b, n)], dim=1).float()
    labels = torch.randint(n_classes, (n * n,), generator=torch.Generator().manual_seed(seed))
    train_idx, test_idx = split_indices(n * n, frac_train, seed)
    hidden = tuple(d_hidden)
    return Task(
        name="memorization", inputs=inputs, labels=labels, train_idx=train_idx, test_idx=test_idx,
        n_classes=n_classes, params={"n": n, "n_classes": n_classes, "frac_train": frac_train, "seed": seed,
                                     "d_hidden": list(hidden)},
        extras={"default_model": lambda: MLPConfig(d_in=2 * n, d_hidden=hidden, d_out=n_classes),
                "pairs": torch.stack([a, b], 1)},
    )
