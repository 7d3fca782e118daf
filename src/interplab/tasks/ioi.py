"""A toy indirect-object-identification (IOI) task: output the name that is not repeated.

After Wang et al. (2023), "Interpretability in the Wild: a Circuit for Indirect Object
Identification in GPT-2 small", reduced to a template over a small vocabulary (the toy IOI
task of Neel Nanda's "200 Concrete Open Problems in Mechanistic Interpretability"):

``[BOS, PAD.., X1, AND, X2, FILL.., S2, TO]`` where ``{X1, X2} = {IO, S}`` in either order
(ABBA and BABA), ``S2 = S`` repeats the subject, and the label at the last position is the
indirect object ``IO``. Between zero and ``max_filler`` filler tokens (drawn from
``n_filler`` words) separate the clauses, padded on the left, so names sit at varying
positions and the model must find them by content. Tokens: names ``0..n_names-1``, then
BOS, PAD, AND, TO and the filler words.

The usual corruption (:func:`ioi_corrupt`) replaces ``S2`` by a third name ``C`` (the "ABC"
prompts of Wang et al.), so no name is repeated; the metric is the logit of ``IO`` minus
that of ``S``.

Example:
    >>> t = ioi_task(n_names=6, max_filler=2, n_examples=5, seed=0)
    >>> x, y = t.inputs[0].tolist(), t.labels[0].item()
    >>> names = [tok for tok in x if tok < 6]
    >>> len(names), names[-1] in names[:2], y in names[:2] and y != names[-1]
    (3, True, True)
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.errors import check
from interplab.models import TransformerConfig
from interplab.tasks import Task, split_indices


def ioi_task(n_names: int = 16, n_filler: int = 4, max_filler: int = 3, n_examples: int = 8000,
             frac_train: float = 0.9, seed: int = 0) -> Task:
    """Toy IOI prompts and their indirect objects; see the module docstring.

    Returns a :class:`~interplab.tasks.Task` with inputs ``[n_examples, 6 + max_filler]``,
    labels ``[n_examples]`` (the IO name) read out at the last position; ``extras`` holds
    ``io``, ``s`` and the position ``s2`` of the repeated name per example.

    Example: see the module docstring.
    """
    check(n_names >= 3, f"IOI needs at least 3 names, got {n_names}.")
    check(n_filler >= 1 and max_filler >= 0 and n_examples >= 2,
          "IOI needs n_filler >= 1, max_filler >= 0 and n_examples >= 2.")
    g = torch.Generator().manual_seed(seed)
    bos, pad, and_, to = n_names, n_names + 1, n_names + 2, n_names + 3
    n_ctx = 6 + max_filler
    io = torch.randint(n_names, (n_examples,), generator=g)
    s = (io + torch.randint(1, n_names, (n_examples,), generator=g)) % n_names  # any other name
    abba = torch.rand(n_examples, generator=g) < 0.5
    n_fill = torch.randint(0, max_filler + 1, (n_examples,), generator=g)
    fill = n_names + 4 + torch.randint(n_filler, (n_examples, max_filler), generator=g)
    x = torch.full((n_examples, n_ctx), pad)
    x[:, 0] = bos
    start = 1 + max_filler - n_fill  # position of X1
    rows = torch.arange(n_examples)
    x[rows, start] = torch.where(abba, io, s)
    x[rows, start + 1] = and_
    x[rows, start + 2] = torch.where(abba, s, io)
    for j in range(max_filler):
        keep = j < n_fill
        x[rows[keep], (start + 3 + j)[keep]] = fill[keep, j]
    x[:, -2] = s
    x[:, -1] = to
    tr, te = split_indices(n_examples, frac_train, seed)
    params = {"n_names": n_names, "n_filler": n_filler, "max_filler": max_filler, "n_examples": n_examples,
              "frac_train": frac_train, "seed": seed}
    return Task(
        name="ioi", inputs=x, labels=io, train_idx=tr, test_idx=te, n_classes=n_names, positions=[-1],
        params=params,
        extras={"io": io, "s": s, "default_model": lambda: TransformerConfig(
            d_vocab=n_names + 4 + n_filler, n_ctx=n_ctx, d_model=64, n_layers=2, n_heads=4, d_mlp=None,
            normalization="LN", d_vocab_out=n_names)},
    )


def ioi_corrupt(task: Task, inputs: Tensor, seed: int = 0) -> Tensor:
    """ABC prompts: each prompt of ``inputs`` with the repeated name replaced by a third name.

    Example:
        >>> t = ioi_task(n_names=6, max_filler=1, n_examples=4, seed=0)
        >>> c = ioi_corrupt(t, t.inputs)
        >>> bool((c[:, :-2] == t.inputs[:, :-2]).all()), bool((c[:, -2] != t.inputs[:, -2]).all())
        (True, True)
    """
    n = task.params["n_names"]
    g = torch.Generator().manual_seed(seed)
    names = inputs[:, :-2]
    out = inputs.clone()
    for i in range(len(inputs)):
        used = set(names[i][names[i] < n].tolist())
        choices = [c for c in range(n) if c not in used]
        out[i, -2] = choices[int(torch.randint(len(choices), (1,), generator=g))]
    return out


__all__ = ["ioi_task", "ioi_corrupt"]
