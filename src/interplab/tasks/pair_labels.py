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


# -- random rules of the same kind (the `pairs` challenge family) ---------------------------------
# A filter is f(a, b) = g(a) + h(b): one per-token function for A and one for B, each of a kind:
#   "linear"    s * x                         (x = token / p in [0, 1))
#   "quadratic" s * ((x - c) / w) ** 2         (curved regions: ellipses, parabolas, hyperbolas)
#   "periodic"  s * cos(2 pi k x + phase)      (periodic bands)
# A filter family fixes the kinds of g and h; a rule is ``op`` (and / or) of two thresholded filters.
FILTER_FAMILIES = {
    "linear": ("linear", "linear"),
    "curved": ("quadratic", "quadratic"),
    "bands": ("periodic", "periodic"),
    "curved-bands": ("quadratic", "periodic"),
    "bands-curved": ("periodic", "quadratic"),
    "curved-linear": ("quadratic", "linear"),
}


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _random_part(kind: str, gen: torch.Generator) -> dict[str, Any]:
    sign = 1.0 if _uniform(gen, 0, 1) < 0.5 else -1.0
    scale = sign * _uniform(gen, 0.6, 1.5)
    if kind == "linear":
        return {"kind": kind, "s": scale}
    if kind == "quadratic":
        return {"kind": kind, "s": scale, "c": _uniform(gen, 0.25, 0.75), "w": _uniform(gen, 0.25, 0.5)}
    k = int(torch.randint(1, 4, (), generator=gen))
    return {"kind": kind, "s": scale, "k": k, "phase": _uniform(gen, 0, 2 * np.pi)}


def _part_values(part: dict[str, Any], p: int) -> np.ndarray:
    x = np.arange(p) / p
    kind = part["kind"]
    if kind == "linear":
        return part["s"] * x
    if kind == "quadratic":
        return part["s"] * ((x - part["c"]) / part["w"]) ** 2
    check(kind == "periodic", f"Unknown per-token function kind {kind!r}.")
    return part["s"] * np.cos(2 * np.pi * part["k"] * x + part["phase"])


def filter_values(spec: dict[str, Any], p: int = P) -> np.ndarray:
    """The ``p x p`` image ``g(a) + h(b)`` of a filter ``{"family", "a": part, "b": part}``.

    Example:
        >>> filter_values({"family": "linear", "a": {"kind": "linear", "s": 1.0},
        ...                "b": {"kind": "linear", "s": -1.0}}, p=3).round(3).tolist()
        [[0.0, -0.333, -0.667], [0.333, 0.0, -0.333], [0.667, 0.333, 0.0]]
    """
    return _part_values(spec["a"], p)[:, None] + _part_values(spec["b"], p)[None, :]


def pair_rule_table(rule: dict[str, Any], p: int | None = None) -> np.ndarray:
    """The 0/1 ``p x p`` label table of a rule ``{"op", "p", "filters": [{..., "threshold"}, ...]}``:
    ``op`` over ``filter_values(f) > f["threshold"]``.

    Example:
        >>> rule = random_pair_rule(0, p=11)
        >>> pair_rule_table(rule).shape
        (11, 11)
    """
    p = int(rule["p"]) if p is None else p
    check(rule.get("op") in ("and", "or"), f"A pair rule's op must be 'and' or 'or', got {rule.get('op')!r}.")
    sides = np.stack([filter_values(f, p) > f["threshold"] for f in rule["filters"]])
    return (sides.all(0) if rule["op"] == "and" else sides.any(0)).astype(np.int64)


def _cut(values: np.ndarray, q: float) -> float:
    """A threshold between two distinct values near quantile ``q`` (never equal to a value)."""
    v = np.unique(values)
    i = int(np.clip(round(q * (len(v) - 1)), 0, len(v) - 2))
    return float((v[i] + v[i + 1]) / 2)


def random_pair_rule(seed: int, p: int = P, op: str | None = None, families: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A random rule of the EIS VII challenge 2 kind drawn from ``seed``: AND or OR (``op``
    when given) of two thresholded filters ``g(A) + h(B)``, each from a random family of
    :data:`FILTER_FAMILIES` (or of ``families``), with random parameters; thresholds at
    random quantiles so that between 20% and 80% of the pairs are labeled 1.

    Returns a JSON-able dict that :func:`pair_rule_table` evaluates; ``"form"`` names it
    (e.g. ``"curved AND bands"``). Raises on an unknown ``op`` or family.

    Example:
        >>> rule = random_pair_rule(3)
        >>> rule["form"], bool(0.2 <= pair_rule_table(rule).mean() <= 0.8)
        ('curved AND bands', True)
    """
    gen = torch.Generator().manual_seed(int(seed))
    names = tuple(FILTER_FAMILIES) if families is None else tuple(families)
    for f in names:
        check(f in FILTER_FAMILIES, f"Unknown filter family {f!r}; choose from {', '.join(FILTER_FAMILIES)}.")
    check(op in (None, "and", "or"), f"op must be 'and' or 'or', got {op!r}.")
    if op is None:
        op = "and" if _uniform(gen, 0, 1) < 0.5 else "or"
    filters = []
    for _ in range(2):
        fam = names[int(torch.randint(len(names), (), generator=gen))]
        ka, kb = FILTER_FAMILIES[fam]
        filters.append({"family": fam, "a": _random_part(ka, gen), "b": _random_part(kb, gen)})
    images = [filter_values(f, p) for f in filters]
    for _ in range(1000):
        # AND: each filter keeps 40-85% of the pairs; OR: each 15-60%
        lo, hi = (0.15, 0.6) if op == "and" else (0.4, 0.85)
        for f, img in zip(filters, images):
            f["threshold"] = _cut(img, _uniform(gen, lo, hi))
        rule = {"op": op, "p": p, "filters": filters,
                "form": f"{filters[0]['family']} {op.upper()} {filters[1]['family']}"}
        if 0.2 <= pair_rule_table(rule).mean() <= 0.8:
            return rule
    raise InterplabError(f"No thresholds of seed {seed}'s filters label 20-80% of the pairs; try another seed.")


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
