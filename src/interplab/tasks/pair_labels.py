"""Pair-label challenges: a binary label for every pair ``(A, B)``, A, B in ``0..p-1``.

Inputs are ``[A, B, p]`` and the label is read at the last position, as in the EIS VII
challenge 2. The label table comes from (in this order of choice):

- ``labels="published"``: ``eis-vii/transformer_label_info.pkl`` in the data directory,
  the challenge's own table (``labels`` = ground truth, ``model_labels`` = the original
  network's predictions);
- ``labels="builtin"``: :func:`builtin_labels`, our own rule in the same spirit (an AND of
  two thresholded sums of per-token functions: a curved region and periodic bands), so
  everything runs with no data at all;
- a path or URL of a pickle in the published format, read with a numpy-only unpickler;
- ``labels="auto"`` (the default): published when the data directory has it, else builtin.

Example:
    >>> t = pair_label_task(labels="builtin", seed=0)
    >>> t.inputs.shape, t.extras["source"], round(t.labels.float().mean().item(), 3)
    (torch.Size([12769, 3]), 'builtin', 0.444)
    >>> pair_label_task(labels="auto", data_dir=None).describe()["labels"] in ("published", "builtin")
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from interplab import data
from interplab.errors import InterplabError, check
from interplab.models import TransformerConfig
from interplab.tasks import Task, split_indices

P = 113
PUBLISHED = "eis-vii/transformer_label_info.pkl"


def builtin_filters(p: int = P) -> tuple[np.ndarray, np.ndarray]:
    """The two hidden filters of the built-in rule, each ``g(A) + h(B)`` over the p x p grid.

    Filter 1 is a tilted, wavy elliptic region; filter 2 is a pattern of periodic bands.

    Example:
        >>> f1, f2 = builtin_filters(7)
        >>> f1.shape, f2.shape
        ((7, 7), (7, 7))
    """
    a = np.arange(p)[:, None] / p * 113.0
    b = np.arange(p)[None, :] / p * 113.0
    f1 = -(((a - 52) / 38.0) ** 2) - ((b - 60) / 45.0) ** 2 + 0.35 * np.sin(2 * np.pi * b / 113.0 * 2)
    f2 = np.cos(2 * np.pi * 3 * a / 113.0) + np.cos(2 * np.pi * 3 * b / 113.0 + 1.0)
    return f1, f2


def builtin_labels(p: int = P) -> np.ndarray:
    """Our own labeling function: ``filter1 > -1.4 AND filter2 > -0.8`` (about 44% positive).

    Example:
        >>> builtin_labels().shape
        (113, 113)
    """
    f1, f2 = builtin_filters(p)
    return ((f1 > -1.4) & (f2 > -0.8)).astype(np.int64)


def load_label_table(source: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    """Load and validate a label table pickle (a path, ``http(s)://`` or ``file://`` URL).

    It must be a numpy-only pickle of a dict with a square 0/1 ``labels`` array and optionally
    ``model_labels`` of the same shape; anything else is refused with one sentence.

    Example:
        >>> import pickle, tempfile, os, numpy as np
        >>> p = os.path.join(tempfile.mkdtemp(), "t.pkl")
        >>> pickle.dump({"labels": np.zeros((3, 4))}, open(p, "wb"))
        >>> load_label_table(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Label table ... must hold a square 0/1 'labels' array, got shape (3, 4).
    """
    src = str(source)
    if src.startswith(("http://", "https://", "file://")):
        obj = data.load_numpy_pickle(data.fetch(src), name=src)
    else:
        obj = data.load_numpy_pickle(Path(src))
    check(isinstance(obj, dict), f"Label table {src} must be a dict with a 'labels' entry.")
    check("labels" in obj, f"Label table {src} has no 'labels' entry.")
    out: dict[str, np.ndarray] = {}
    for key in ("labels", "model_labels"):
        if key not in obj:
            continue
        arr = obj[key]
        check(isinstance(arr, np.ndarray), f"Label table {src}: {key!r} must be a numpy array.")
        check(
            arr.ndim == 2 and arr.shape[0] == arr.shape[1],
            f"Label table {src} must hold a square 0/1 {key!r} array, got shape {arr.shape}.",
        )
        check(bool(np.isin(arr, (0, 1)).all()), f"Label table {src}: {key!r} must contain only 0 and 1.")
        out[key] = arr.astype(np.int64)
    if "model_labels" in out:
        check(out["model_labels"].shape == out["labels"].shape,
              f"Label table {src}: 'model_labels' and 'labels' have different shapes.")
    return out


def resolve_labels(labels: str, data_dir: Any = None) -> tuple[dict[str, np.ndarray], str]:
    """The label table and a description of where it came from (see the module docstring).

    Example:
        >>> table, source = resolve_labels("builtin")
        >>> source, table["labels"].shape
        ('builtin', (113, 113))
    """
    if labels == "builtin":
        return {"labels": builtin_labels()}, "builtin"
    if labels in ("auto", "published"):
        try:
            path = data.data_file(PUBLISHED, data_dir)
        except InterplabError:
            if labels == "published" or data_dir is not None:
                raise
            return {"labels": builtin_labels()}, "builtin"
        return load_label_table(path), f"published ({path})"
    return load_label_table(labels), str(labels)


def pair_label_task(labels: str = "auto", frac_train: float = 0.5, seed: int = 0, data_dir: Any = None) -> Task:
    """All ``p * p`` pairs of a label table, a random ``frac_train`` of them for training.

    ``task.extras`` holds ``source``, the ``table`` (p x p ground truth) and, when the table
    provides it, ``model_labels`` (the original network's predictions, flattened like
    ``labels``). The default model is the challenge 2 architecture.

    Example: see the module docstring.
    """
    table, source = resolve_labels(labels, data_dir)
    truth = table["labels"]
    p = truth.shape[0]
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    inputs = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)
    train_idx, test_idx = split_indices(p * p, frac_train, seed)
    extras: dict[str, Any] = {"source": source, "table": truth, "p": p,
                              "default_model": lambda: challenge2_config(p)}
    if "model_labels" in table:
        extras["model_labels"] = torch.as_tensor(table["model_labels"].reshape(-1))
    # the resolved source, never "auto": a stored run says which table it was trained on
    resolved = ("published" if source.startswith("published") else source) if labels == "auto" else labels
    return Task(
        name="pair-labels", inputs=inputs, labels=torch.as_tensor(truth.reshape(-1)), train_idx=train_idx,
        test_idx=test_idx, n_classes=2, positions=[-1],
        params={"labels": resolved, "frac_train": frac_train, "seed": seed}, extras=extras,
    )


def challenge2_config(p: int = P) -> TransformerConfig:
    """The EIS VII challenge 2 transformer: 1 layer, d_model 128, 8 heads, d_mlp 1024, ReLU, no LN.

    Example:
        >>> challenge2_config().d_vocab, challenge2_config().vocab_out
        (114, 2)
    """
    return TransformerConfig(d_vocab=p + 1, n_ctx=3, d_model=128, n_layers=1, n_heads=8, d_mlp=1024,
                             act_fn="relu", normalization="none", bias=True, d_vocab_out=2)
