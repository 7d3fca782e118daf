"""Two-token names with a memorised attribute: the memorization toy model of the Fact Finding posts.

A name is a pair of tokens ``[first, last]`` (first-name tokens ``0..n_first-1``, last-name
tokens ``n_first..n_first+n_last-1``); each of ``n_names`` distinct names, drawn at random
from all pairs, gets a random attribute in ``0..n_attributes-1`` (think: the sport an athlete
plays). Every first and last token is shared by several names, so the attribute is a function
of the pair, not of either token: the model must combine the two tokens (attention moves the
first name to the last position) and look the pair up (MLPs). The readout is at the last
position. From Nanda, Rajamanoharan, Kramar & Shah (2023), "Fact Finding", post 4.

Example:
    >>> t = two_token_names_task(n_first=6, n_last=6, n_names=20, n_attributes=3, seed=0)
    >>> t.inputs.shape, int(t.inputs[:, 0].max()) < 6 <= int(t.inputs[:, 1].min())
    (torch.Size([20, 2]), True)
    >>> len(set(map(tuple, t.inputs.tolist())))
    20
"""

from __future__ import annotations

import torch

from interplab.errors import check
from interplab.models import TransformerConfig
from interplab.tasks import Task, split_indices


def two_token_names_task(n_first: int = 40, n_last: int = 40, n_names: int = 500, n_attributes: int = 4,
                         frac_train: float = 1.0, seed: int = 0, d_model: int = 64, n_layers: int = 2,
                         d_mlp: int = 256) -> Task:
    """``n_names`` random distinct ``[first, last]`` names, each with a random attribute.

    ``frac_train=1.0`` (the default) memorises every name; the default model is a
    ``n_layers``-layer transformer (4 heads, LayerNorm) with ``n_attributes`` outputs. Raises
    when more names are asked for than there are pairs.

    Example: see the module docstring.
    """
    check(n_first >= 2 and n_last >= 2 and n_attributes >= 2, "Names need n_first, n_last, n_attributes >= 2.")
    check(1 <= n_names <= n_first * n_last, f"n_names must be in 1..{n_first * n_last} (all pairs), got {n_names}.")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(n_first * n_last, generator=g)[:n_names].sort().values
    inputs = torch.stack([pick // n_last, n_first + pick % n_last], 1)
    labels = torch.randint(n_attributes, (n_names,), generator=g)
    train_idx, test_idx = split_indices(n_names, frac_train, seed)
    params = {"n_first": n_first, "n_last": n_last, "n_names": n_names, "n_attributes": n_attributes,
              "frac_train": frac_train, "seed": seed, "d_model": d_model, "n_layers": n_layers, "d_mlp": d_mlp}
    cfg = TransformerConfig(d_vocab=n_first + n_last, n_ctx=2, d_model=d_model, n_layers=n_layers, n_heads=4,
                            d_mlp=d_mlp, normalization="LN", d_vocab_out=n_attributes)
    return Task(name="two-token-names", inputs=inputs, labels=labels, train_idx=train_idx, test_idx=test_idx,
                n_classes=n_attributes, positions=[-1], params=params, extras={"default_model": lambda: cfg})


__all__ = ["two_token_names_task"]
