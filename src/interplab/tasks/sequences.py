"""Algorithmic sequence tasks for small transformers.

- ``sorting``: ``[x_1..x_k, SEP, y_1..y_{k-1}]``; predict the sorted list ``y`` at positions
  ``k..2k-1`` (the SEP position predicts ``y_1``).
- ``min-max``: ``[a, b, OP]`` with OP = MIN or MAX; predict ``min(a, b)`` or ``max(a, b)``.
- ``induction`` (repeated random subsequences): ``[BOS, r_1..r_L, r_1..r_L]``; in the second
  copy each token predicts the next one, which only an induction circuit can do.
- ``previous-token``: random tokens; predict at each position ``i >= 1`` the token at ``i - 1``.

Example:
    >>> t = sorting_task(n_values=10, k=4, n_examples=100, seed=0)
    >>> x, y = t.inputs[0], t.labels[0]
    >>> sorted(x[:4].tolist()) == y.tolist()
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interplab.errors import check
from interplab.models import TransformerConfig
from interplab.tasks import Task, split_indices


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(d_vocab: int, n_ctx: int, d_vocab_out: int, n_layers: int = 2, attn_only: bool = False
           ) -> Callable[[], TransformerConfig]:
    return lambda: TransformerConfig(d_vocab=d_vocab, n_ctx=n_ctx, d_model=64, n_layers=n_layers, n_heads=4,
                                     d_mlp=None if attn_only else 256, normalization="LN",
                                     d_vocab_out=d_vocab_out)


def sorting_task(n_values: int = 20, k: int = 5, n_examples: int = 5000, frac_train: float = 0.8,
                 seed: int = 0) -> Task:
    """Sort ``k`` integers in ``0..n_values-1``; SEP is token ``n_values``.

    Example: see the module docstring.
    """
    check(n_values >= 2 and k >= 2 and n_examples >= 2, "sorting needs n_values >= 2, k >= 2, n_examples >= 2.")
    x = torch.randint(n_values, (n_examples, k), generator=_gen(seed))
    y = x.sort(dim=1).values
    inputs = torch.cat([x, torch.full((n_examples, 1), n_values), y[:, :-1]], dim=1)
    tr, te = split_indices(n_examples, frac_train, seed)
    return Task(
        name="sorting", inputs=inputs, labels=y, train_idx=tr, test_idx=te, n_classes=n_values,
        positions=list(range(k, 2 * k)),
        params={"n_values": n_values, "k": k, "n_examples": n_examples, "frac_train": frac_train, "seed": seed},
        extras={"default_model": _model(n_values + 1, 2 * k, n_values)},
    )


def min_max_task(n_values: int = 50, frac_train: float = 0.8, seed: int = 0) -> Task:
    """Every ``(a, b, op)``; tokens MIN = ``n_values``, MAX = ``n_values + 1``.

    Example:
        >>> t = min_max_task(n_values=5, seed=0)
        >>> row = t.inputs.tolist().index([3, 1, 6]); t.labels[row].item()   # max(3, 1)
        3
    """
    check(n_values >= 2, f"n_values must be at least 2, got {n_values}.")
    a, b, op = torch.meshgrid(torch.arange(n_values), torch.arange(n_values), torch.arange(2), indexing="ij")
    a, b, op = a.flatten(), b.flatten(), op.flatten()
    labels = torch.where(op == 0, torch.minimum(a, b), torch.maximum(a, b))
    inputs = torch.stack([a, b, n_values + op], dim=1)
    tr, te = split_indices(len(inputs), frac_train, seed)
    return Task(
        name="min-max", inputs=inputs, labels=labels, train_idx=tr, test_idx=te, n_classes=n_values,
        positions=[-1], params={"n_values": n_values, "frac_train": frac_train, "seed": seed},
        extras={"default_model": _model(n_values + 2, 3, n_values, n_layers=1)},
    )


def induction_task(n_values: int = 30, length: int = 10, n_examples: int = 4000, frac_train: float = 0.9,
                   seed: int = 0) -> Task:
    """Repeated random subsequences ``[BOS, r, r]``; BOS is token ``n_values``.

    Labels are the next tokens in the second copy (positions ``L+1..2L-1`` predict ``r_2..r_L``).

    Example:
        >>> t = induction_task(n_values=10, length=4, n_examples=8, seed=0)
        >>> x, y = t.inputs[0], t.labels[0]
        >>> y.tolist() == x[2:5].tolist(), t.positions
        (True, [5, 6, 7])
    """
    check(n_values >= 2 and length >= 2, "induction needs n_values >= 2 and length >= 2.")
    r = torch.randint(n_values, (n_examples, length), generator=_gen(seed))
    inputs = torch.cat([torch.full((n_examples, 1), n_values), r, r], dim=1)
    tr, te = split_indices(n_examples, frac_train, seed)
    return Task(
        name="induction", inputs=inputs, labels=r[:, 1:], train_idx=tr, test_idx=te, n_classes=n_values,
        positions=list(range(length + 1, 2 * length)),
        params={"n_values": n_values, "length": length, "n_examples": n_examples, "frac_train": frac_train,
                "seed": seed},
        extras={"default_model": _model(n_values + 1, 2 * length + 1, n_values, attn_only=True)},
    )


def previous_token_task(n_values: int = 30, length: int = 8, n_examples: int = 4000, frac_train: float = 0.9,
                        seed: int = 0) -> Task:
    """Random tokens; at each position ``i >= 1`` predict the token at ``i - 1``.

    Example:
        >>> t = previous_token_task(n_values=10, length=5, n_examples=4, seed=0)
        >>> t.labels[0].tolist() == t.inputs[0, :-1].tolist()
        True
    """
    check(n_values >= 2 and length >= 2, "previous-token needs n_values >= 2 and length >= 2.")
    x = torch.randint(n_values, (n_examples, length), generator=_gen(seed))
    tr, te = split_indices(n_examples, frac_train, seed)
    return Task(
        name="previous-token", inputs=x, labels=x[:, :-1], train_idx=tr, test_idx=te, n_classes=n_values,
        positions=list(range(1, length)),
        params={"n_values": n_values, "length": length, "n_examples": n_examples, "frac_train": frac_train,
                "seed": seed},
        extras={"default_model": _model(n_values, length, n_values, n_layers=1, attn_only=True)},
    )


BUILDERS: dict[str, Callable[..., Task]] = {
    "sorting": sorting_task,
    "min-max": min_max_task,
    "induction": induction_task,
    "previous-token": previous_token_task,
}
