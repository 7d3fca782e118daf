"""Modular arithmetic ``a op b mod p`` as token sequences ``[a, b, =]`` (``=`` is token p).

The label is read out at the last position. ``op`` is ``+``, ``-`` or ``/`` (division by
``b`` means multiplying by its inverse mod p; pairs with ``b = 0`` are left out).

Example:
    >>> t = modular_task(p=5, op="-", frac_train=0.4, seed=0)
    >>> t.inputs[7].tolist(), t.labels[7].item()   # 1 - 2 mod 5
    ([1, 2, 5], 4)
"""

from __future__ import annotations

import torch

from interplab.errors import check
from interplab.models import TransformerConfig
from interplab.tasks import Task, split_indices

OPS = {"+": "modular-addition", "-": "modular-subtraction", "/": "modular-division"}


def is_prime(p: int) -> bool:
    """Whether ``p`` is prime.

    Example:
        >>> [q for q in range(20) if is_prime(q)]
        [2, 3, 5, 7, 11, 13, 17, 19]
    """
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


def modular_task(p: int = 113, op: str = "+", frac_train: float = 0.3, seed: int = 0) -> Task:
    """All pairs ``(a, b)`` with their label ``a op b mod p``, split ``frac_train`` by ``seed``.

    The default model (``task.default_model_config()``) is the grokking transformer: 1 layer,
    4 heads, d_model 128, d_mlp 512, ReLU, no LayerNorm, no biases.

    Example: see the module docstring.
    """
    check(op in OPS, f"op must be one of {', '.join(OPS)}, got {op!r}.")
    check(isinstance(p, int) and p >= 2, f"p must be an integer of at least 2, got {p}.")
    check(op != "/" or is_prime(p), f"Division mod {p} needs p to be prime.")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
        inv = torch.tensor([pow(int(x), p - 2, p) if x else 0 for x in range(p)])
        labels = (a * inv[b]) % p
    else:
        labels = (a + b) % p if op == "+" else (a - b) % p
    inputs = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    train_idx, test_idx = split_indices(len(inputs), frac_train, seed)

    def default_model() -> TransformerConfig:
        return TransformerConfig(d_vocab=p + 1, n_ctx=3, d_model=128, n_layers=1, n_heads=4, d_mlp=512,
                                 act_fn="relu", normalization="none", bias=False, d_vocab_out=p)

    return Task(
        name=OPS[op], inputs=inputs, labels=labels, train_idx=train_idx, test_idx=test_idx, n_classes=p,
        positions=[-1], params={"p": p, "op": op, "frac_train": frac_train, "seed": seed},
        extras={"default_model": default_model},
    )
