"""Algorithmic sequence tasks for small transformers.

- ``sorting``: ``[x_1..x_k, SEP, y_1..y_{k-1}]``; predict the sorted list ``y`` at positions
  ``k..2k-1`` (the SEP position predicts ``y_1``).
- ``min-max``: ``[a, b, OP]`` with OP = MIN or MAX; predict ``min(a, b)`` or ``max(a, b)``.
- ``induction`` (repeated random subsequences): ``[BOS, prefix, r_1..r_l, second part, filler]``
  with a random period ``l`` and prefix length per sequence; each token of the second part (the
  first copy's tokens, shuffled by default) predicts its successor in the first copy, which only
  an induction circuit can do.
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


def min_max_prompt_pairs(n_values: int, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Clean/corrupted prompt pairs ``[n', 3]`` for patching a min-max model: the operation flipped.

    Draws ``4 n`` pairs ``(a, b)``, keeps up to ``n`` with ``|a - b| >= 2``, alternates MIN and
    MAX (tokens ``n_values`` and ``n_values + 1``, as :func:`min_max_task`); the corrupted prompt
    has the other operation. Returns ``(clean, corrupted, answer, wrong)``: the clean answer and
    the corrupted one ``[n']``.

    Example:
        >>> clean, corrupted, answer, wrong = min_max_prompt_pairs(10, 4, seed=0)
        >>> clean.shape, bool((clean[:, :2] == corrupted[:, :2]).all()), bool((clean[:, 2] != corrupted[:, 2]).all())
        (torch.Size([4, 3]), True, True)
    """
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(n_values, (4 * n,), generator=g)
    b = torch.randint(n_values, (4 * n,), generator=g)
    keep = (a - b).abs() >= 2
    a, b = a[keep][:n], b[keep][:n]
    op = torch.arange(len(a)) % 2  # 0 = MIN, 1 = MAX
    clean = torch.stack([a, b, n_values + op], 1)
    corrupted = torch.stack([a, b, n_values + 1 - op], 1)
    answer = torch.where(op == 0, torch.minimum(a, b), torch.maximum(a, b))
    wrong = torch.where(op == 0, torch.maximum(a, b), torch.minimum(a, b))
    return clean, corrupted, answer, wrong


def induction_task(n_values: int = 30, length: int = 10, n_examples: int = 4000, frac_train: float = 0.9,
                   seed: int = 0, min_length: int | None = None, max_prefix: int | None = None,
                   shuffle: bool = True) -> Task:
    """Repeated random subsequences ``[BOS, prefix, r, r, filler]``; BOS is token ``n_values``.

    Each sequence draws its own period ``l`` in ``min_length..length`` (default
    ``max(2, length // 2)..length``) and prefix length ``a`` in ``0..max_prefix`` (default
    ``length // 2``) of random tokens; random filler pads every sequence to
    ``1 + max_prefix + 2 * length`` tokens. The tokens of ``r`` are distinct and prefix and filler
    use only the others, so each token of the second copy occurred once before. As the distance between the copies varies, no head
    attending at a fixed offset can copy the answer: only an induction circuit (a previous-token
    head and an induction head) predicts the second copy. With ``shuffle`` (default) the second
    part holds ``r_1..r_{l-1}`` in random order (then ``r_l``), so matching several earlier
    tokens does not help: the model needs a single previous-token head (offset 1) feeding an
    induction head. Labels are each second-part token's successor in the first copy (the next
    token, without ``shuffle``), at the fixed readout ``positions`` ``min_length + 1 .. 2 * length + max_prefix - 1``;
    every other readout position has the label ``-100``, which loss and accuracy ignore.
    ``min_length=length, max_prefix=0`` gives the fixed-period task ``[BOS, r, r]``.

    Example:
        >>> t = induction_task(n_values=10, length=4, n_examples=8, seed=0, min_length=2, max_prefix=1)
        >>> t.inputs.shape, t.positions
        (torch.Size([8, 10]), [3, 4, 5, 6, 7, 8])
        >>> x, y = t.inputs[0].tolist(), t.labels[0].tolist()
        >>> all(x[x.index(x[p]) + 1] == y[i] for i, p in enumerate(t.positions) if y[i] >= 0)
        True
        >>> fixed = induction_task(n_values=10, length=4, n_examples=8, seed=0, min_length=4, max_prefix=0)
        >>> fixed.labels[0].tolist() == fixed.inputs[0, 2:5].tolist(), fixed.positions
        (True, [5, 6, 7])
    """
    min_length = max(2, length // 2) if min_length is None else min_length
    max_prefix = length // 2 if max_prefix is None else max_prefix
    check(n_values >= 2 and 2 <= min_length <= length and max_prefix >= 0,
          "induction needs n_values >= 2, 2 <= min_length <= length and max_prefix >= 0.")
    check(n_values > length or (min_length == length and max_prefix == 0),
          f"induction with a varying period needs n_values > length, got {n_values} and {length}.")
    g = _gen(seed)
    n_ctx = 1 + max_prefix + 2 * length
    params = {"n_values": n_values, "length": length, "n_examples": n_examples, "frac_train": frac_train,
              "seed": seed, "min_length": min_length, "max_prefix": max_prefix, "shuffle": shuffle}
    bos = torch.full((n_examples, 1), n_values)
    if min_length == length and max_prefix == 0:  # fixed period: the same draws as the original task
        r = torch.randint(n_values, (n_examples, length), generator=g)
        inputs, labels = torch.cat([bos, r, r], dim=1), r[:, 1:]
    else:
        period = torch.randint(min_length, length + 1, (n_examples,), generator=g)
        prefix = torch.randint(0, max_prefix + 1, (n_examples,), generator=g)
        # r: distinct tokens (the first ``period`` of a random permutation); prefix and filler: the
        # other tokens, so each token of the second copy has exactly one earlier occurrence
        perm = torch.rand(n_examples, n_values, generator=g).argsort(1)
        pos = torch.arange(n_ctx)[None]
        start1, start2 = (1 + prefix)[:, None], (1 + prefix + period)[:, None]  # the copies' first positions
        offset = torch.rand(n_examples, n_ctx, generator=g)
        filler = period[:, None] + (offset * (n_values - period[:, None])).long()
        first = (pos >= start1) & (pos < start2)
        second = (pos >= start2) & (pos < start2 + period[:, None])
        query = (pos >= start2) & (pos < start2 + period[:, None] - 1)
        rank2 = (pos - start2).clamp(min=0)  # index into the first copy of each second-part token
        if shuffle:  # the second part: r_1..r_{l-1} in random order, each labelled with its successor
            idx = torch.arange(length)[None]
            keys = torch.where(idx < period[:, None] - 1, torch.rand(n_examples, length, generator=g), 2.0)
            order = torch.cat([keys.argsort(1), torch.full((n_examples, n_ctx), length - 1)], dim=1)
            rank2 = order.gather(1, rank2)
        rank = torch.where(first, pos - start1, torch.where(second, rank2, filler))
        inputs = perm.gather(1, rank.clamp(max=n_values - 1))
        inputs[:, 0] = n_values
        succ = perm.gather(1, (rank + 1).clamp(max=n_values - 1))  # the token after it in the first copy
        labels = torch.where(query, succ, torch.full_like(inputs, -100))[:, min_length + 1:n_ctx - 1]
    tr, te = split_indices(n_examples, frac_train, seed)
    return Task(
        name="induction", inputs=inputs, labels=labels, train_idx=tr, test_idx=te, n_classes=n_values,
        positions=list(range(min_length + 1, n_ctx - 1)), params=params,
        extras={"default_model": _model(n_values + 1, n_ctx, n_values, attn_only=True)},
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
