"""Linear probes: is a property linearly readable from a site's activations?

A probe is a linear model fitted on activations ``X [N, d]`` to predict a property ``y [N]``
of each input: logistic regression for classes (scored by test accuracy), ridge regression
for numbers (scored by test R^2). One fit says little, so :func:`probe` repeats the fit over
random train/test splits (one seed for all of them) and reports the mean and spread of the
test score. :func:`probe_sites` does that at every site of a model, e.g. per layer, reading
one position of each sequence (or a different position per input, such as the last token of
a multi-token name: :func:`interplab.instrument.gather_positions`). :func:`unit_auc` scores each single unit (or
feature) as a one-dimensional probe by its ROC AUC.

Probes as a method: Alain & Bengio (2016), "Understanding intermediate layers using linear
classifier probes"; used per layer for multi-token entities in Nanda, Rajamanoharan, Kramar &
Shah (2023), "Fact Finding" (Alignment Forum), posts 1 and 3. scikit-learn does the fitting.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(200, 5, generator=g)
    >>> r = probe(X, (X[:, 0] > 0).long(), n_splits=3, seed=0)
    >>> r.mean > 0.9, len(r.scores)
    (True, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import check
from interplab.instrument import site_values

KINDS = ("logistic", "ridge")


@dataclass(frozen=True)
class ProbeResult:
    """Test scores of repeated probe fits: accuracy (logistic) or R^2 (ridge).

    ``chance``: the score of always predicting the most frequent class of the training split
    (logistic), or 0 (ridge: R^2 of predicting the training mean).
    """

    kind: str
    scores: tuple[float, ...]
    train_scores: tuple[float, ...]
    chance: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean test score over the splits."""
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """Standard deviation of the test score over the splits."""
        return float(np.std(self.scores))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``mean``, ``std``, ``chance``, ``train_mean``, ``scores``."""
        return {"mean": self.mean, "std": self.std, "chance": self.chance,
                "train_mean": float(np.mean(self.train_scores)), "scores": list(self.scores)}


def _as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _splits(n: int, y: np.ndarray, kind: str, n_splits: int, test_frac: float, seed: int
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    n_test = max(1, int(round(test_frac * n)))
    counts = np.unique(y, return_counts=True)[1] if kind == "logistic" else None
    stratify = counts is not None and counts.min() >= 2 and n_test >= len(counts) and n - n_test >= len(counts)
    cls = StratifiedShuffleSplit if stratify else ShuffleSplit
    splitter = cls(n_splits=n_splits, test_size=n_test, random_state=seed)
    return list(splitter.split(np.zeros(n), y if stratify else None))


def probe(
    X: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    kind: str = "logistic",
    n_splits: int = 5,
    test_frac: float = 0.3,
    seed: int = 0,
    C: float | Sequence[float] = 1.0,
    alpha: float | Sequence[float] = 1.0,
    standardize: bool = True,
    max_iter: int = 2000,
) -> ProbeResult:
    """Fit a linear probe on ``n_splits`` random train/test splits; return the test scores.

    ``X``: activations ``[N, d]`` (any extra axes are flattened). ``y``: ``[N]`` class labels
    (``kind="logistic"``, multinomial, inverse regularisation ``C``; score = accuracy) or
    numbers (``kind="ridge"``, penalty ``alpha``; score = R^2). A list of values for ``C`` or
    ``alpha`` picks the best one by 3-fold cross-validation inside each training split (useful
    when there are few examples per dimension). Features are standardised on each training
    split when ``standardize``. Splits are stratified by class when every class
    has at least two members. Raises :class:`~interplab.errors.InterplabError` for mismatched
    lengths, fewer than 4 examples, a single class, or an unknown kind.

    Example:
        >>> import torch
        >>> X = torch.randn(100, 3, generator=torch.Generator().manual_seed(1))
        >>> r = probe(X, 2 * X[:, 1] - X[:, 2], kind="ridge", n_splits=2, alpha=1e-3)
        >>> round(r.mean, 3), r.chance
        (1.0, 0.0)
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check(kind in KINDS, f"Probe kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    Xn = _as_numpy(X).astype(np.float64)
    Xn = Xn.reshape(len(Xn), -1)
    yn = _as_numpy(y).reshape(-1)
    check(len(Xn) == len(yn), f"X has {len(Xn)} rows but y has {len(yn)} labels.")
    check(len(Xn) >= 4, f"A probe needs at least 4 examples, got {len(Xn)}.")
    check(n_splits >= 1 and 0 < test_frac < 1, "n_splits must be >= 1 and test_frac in (0, 1).")
    if kind == "logistic":
        check(len(np.unique(yn)) >= 2, "A logistic probe needs at least two classes in y.")
    else:
        yn = yn.astype(np.float64)
    scores, train_scores, chances = [], [], []
    for train, test in _splits(len(Xn), yn, kind, n_splits, test_frac, seed):
        if kind == "logistic":
            classes, counts = np.unique(yn[train], return_counts=True)
            chances.append(float(np.mean(yn[test] == classes[counts.argmax()])))
            if len(classes) < 2:  # a degenerate split: the constant prediction is all a probe can do
                scores.append(chances[-1])
                train_scores.append(1.0)
                continue
            folds = int(min(3, np.unique(yn[train], return_counts=True)[1].min()))
            if isinstance(C, (int, float)) or folds < 2:
                est: Any = LogisticRegression(C=C if isinstance(C, (int, float)) else float(np.median(C)),
                                              max_iter=max_iter)
            else:
                est = LogisticRegressionCV(Cs=list(C), cv=folds, max_iter=max_iter, scoring="accuracy",
                                           **_cv_quiet_options(LogisticRegressionCV))
        else:
            chances.append(0.0)
            est = Ridge(alpha=alpha) if isinstance(alpha, (int, float)) else RidgeCV(alphas=list(alpha))
        model = make_pipeline(StandardScaler(), est) if standardize else est
        model.fit(Xn[train], yn[train])
        scores.append(float(model.score(Xn[test], yn[test])))
        train_scores.append(float(model.score(Xn[train], yn[train])))
    return ProbeResult(kind, tuple(scores), tuple(train_scores), float(np.mean(chances)))


def _cv_quiet_options(cls: Any) -> dict[str, Any]:
    """Options that keep newer scikit-learn's LogisticRegressionCV on plain L2 without deprecation warnings."""
    import inspect

    params = inspect.signature(cls).parameters
    return {k: v for k, v in (("l1_ratios", (0.0,)), ("use_legacy_attributes", False)) if k in params}


def probe_sites(model: Any, inputs: Tensor, y: Tensor | np.ndarray, sites: Sequence[str],
                position: Tensor | Sequence[int] | int | None = -1, kind: str = "logistic", quiet: bool = True,
                model_kwargs: dict[str, Any] | None = None, **probe_kwargs: Any) -> dict[str, ProbeResult]:
    """A :func:`probe` at each site (e.g. ``blocks.{l}.hook_resid_post`` for every layer).

    ``position``: which position of each sequence to read (one int, or one per input; None for
    models without a position axis). ``probe_kwargs`` go to :func:`probe` (``n_splits``,
    ``seed``, ``C``, ...). Returns ``{site: ProbeResult}`` in the order of ``sites``.

    Example:
        >>> import torch
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=4, d_hidden=(16,), d_out=2), seed=0)
        >>> x = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
        >>> res = probe_sites(m, x, (x[:, 0] > 0).long(), ["hook_input", "layers.0.hook_post"], position=None,
        ...                   n_splits=2)
        >>> res["hook_input"].mean > 0.8
        True
    """
    acts = site_values(model, inputs, list(sites), position=position, **(model_kwargs or {}))
    out = {}
    for s in tqdm(sites, disable=quiet, desc="probes", unit="site"):
        out[s] = probe(acts[s], y, kind=kind, **probe_kwargs)
    return out


def unit_auc(acts: Tensor, labels: Tensor | np.ndarray) -> Tensor:
    """ROC AUC of each unit (last axis of ``acts [N, units]``) as a detector of binary ``labels [N]``.

    0.5 is chance; 1 means the unit's value ranks every positive above every negative; 0 the
    reverse (so ``max(auc, 1 - auc)`` is the unit's quality as a probe either way round).
    Ties count half (the Mann-Whitney statistic). Raises if ``labels`` is not two-valued.

    Example:
        >>> import torch
        >>> acts = torch.tensor([[0.1, 3.0], [0.9, 1.0], [0.8, 2.0], [0.2, 0.0]])
        >>> unit_auc(acts, torch.tensor([0, 1, 1, 0])).tolist()
        [1.0, 0.5]
    """
    from sklearn.metrics import roc_auc_score

    a = _as_numpy(acts).astype(np.float64)
    a = a.reshape(len(a), -1)
    yn = _as_numpy(labels).reshape(-1)
    check(len(a) == len(yn), f"acts has {len(a)} rows but labels has {len(yn)}.")
    values = np.unique(yn)
    check(len(values) == 2, f"unit_auc needs binary labels, got {len(values)} distinct values.")
    yb = (yn == values[1]).astype(int)
    return torch.tensor([roc_auc_score(yb, a[:, j]) for j in range(a.shape[1])], dtype=torch.float64)


__all__ = ["KINDS", "ProbeResult", "probe", "probe_sites", "unit_auc"]
