"""Search for a labeling rule that reproduces a model's binary labels from a similarity score.

A candidate rule scores each image against a template (:func:`interplab.analysis.templates.similarity`,
with a centering) and labels it from the score in one of three forms:

- ``threshold``: 1 iff ``score > t`` (or ``score < t``);
- ``band``: 1 iff ``lo <= score <= hi``;
- ``two-sided``: 1 iff ``score < lo`` or ``score > hi``.

:func:`fit_score_rule` finds the best thresholds for one score exactly (one pass over the
sorted scores covers all three forms); :func:`search_rules` tries every template and
centering and keeps the rule that agrees best with the labels, preferring the simpler form
when it is within ``simplicity`` of the best. :meth:`Rule.source` writes the rule as a
self-contained Python function ``rule(images)`` (numpy and embedded constants only) that gives
exactly the labels :meth:`Rule.predict` gives.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(300, 28, 28)).astype(np.uint8)
    >>> t = np.zeros((28, 28), dtype=np.uint8); t[:, :14] = 255
    >>> from interplab.analysis.templates import similarity
    >>> s = similarity(images, t, "mean")
    >>> labels = ((s < np.quantile(s, 0.3)) | (s > np.quantile(s, 0.8))).astype(int)
    >>> rule = search_rules(images, labels, {"left": t, "flat": np.full((28, 28), 9, np.uint8)})[0]
    >>> rule.template_name, rule.kind, rule.agree
    ('left', 'two-sided', 1.0)
    >>> ns = {}; exec(rule.source(), ns)
    >>> bool((ns["rule"](images) == labels).all())
    True
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from interplab.analysis.templates import CENTERS, similarity, to_template
from interplab.errors import check

KINDS = ("threshold", "band", "two-sided")


@dataclass(frozen=True)
class Rule:
    """A rule on a similarity score: ``kind`` with bounds ``lo``/``hi`` (``None`` = open end).

    ``threshold`` with ``lo`` set: 1 iff score > lo; with ``hi`` set: 1 iff score < hi.
    ``band``: 1 iff lo <= score <= hi. ``two-sided``: 1 iff score < lo or score > hi.
    """

    template_name: str
    template: np.ndarray
    center: str
    kind: str
    lo: float | None
    hi: float | None
    agree: float = float("nan")

    def scores(self, images: np.ndarray) -> np.ndarray:
        """The similarity score of each image (uint8 ``(N, 28, 28)``)."""
        return similarity(images, self.template, self.center)

    def predict_scores(self, s: np.ndarray) -> np.ndarray:
        """Labels (0/1 int64) from scores."""
        s = np.asarray(s, dtype=np.float64)
        if self.kind == "threshold":
            out = s > self.lo if self.lo is not None else s < self.hi
        elif self.kind == "band":
            out = (s >= self.lo) & (s <= self.hi)
        else:
            out = (s < self.lo) | (s > self.hi)
        return out.astype(np.int64)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Labels (0/1 int64) of uint8 images ``(N, 28, 28)``."""
        return self.predict_scores(self.scores(images))

    def regions(self, s: np.ndarray) -> tuple[np.ndarray, float]:
        """Which side of the rule's middle each score lies: ``(s > cut, cut)``.

        The middle ``cut`` is the bound of a threshold rule and the midpoint of ``lo`` and
        ``hi`` of a band or two-sided rule; the boolean mask ``[N]`` is True on the high side.

        Example:
            >>> r = Rule("t", np.zeros((28, 28)), "none", "band", 1.0, 3.0)
            >>> mask, cut = r.regions(np.array([0.5, 2.5, 4.0]))
            >>> mask.tolist(), cut
            ([False, True, True], 2.0)
        """
        if self.kind == "threshold":
            cut = self.lo if self.lo is not None else self.hi
        else:
            cut = (self.lo + self.hi) / 2.0  # type: ignore[operator]
        return s > cut, float(cut)

    def describe(self) -> str:
        """The rule in one sentence."""
        score = f"similarity to the {self.template_name} template ({self.center}-centered)"
        if self.kind == "threshold":
            return (f"1 iff the {score} is above {self.lo:.4g}" if self.lo is not None
                    else f"1 iff the {score} is below {self.hi:.4g}")
        if self.kind == "band":
            return f"1 iff the {score} lies in [{self.lo:.4g}, {self.hi:.4g}]"
        return f"1 iff the {score} lies outside [{self.lo:.4g}, {self.hi:.4g}]"

    def source(self) -> str:
        """Python source defining ``rule(images)`` (uint8 ``(N, 28, 28)`` -> N labels in {0, 1}).

        Needs only numpy; the template is embedded as hex bytes and the bounds as exact floats.
        """
        hexstr = self.template.astype(np.uint8).tobytes().hex()
        lines = textwrap.wrap(hexstr, 96)
        template = "\n".join(f'    "{ln}"' for ln in lines)
        shift = {"none": "", "mean": "\nT = T - T.mean()", "mid": "\nT = T - 0.5"}[self.center]
        if self.kind == "threshold":
            cond = f"s > {self.lo!r}" if self.lo is not None else f"s < {self.hi!r}"
        elif self.kind == "band":
            cond = f"(s >= {self.lo!r}) & (s <= {self.hi!r})"
        else:
            cond = f"(s < {self.lo!r}) | (s > {self.hi!r})"
        return (
            "import numpy as np\n\n"
            f"# template: {self.template_name} (28x28 uint8, row-major hex)\n"
            "T = np.frombuffer(bytes.fromhex(\n"
            f"{template}\n"
            "), dtype=np.uint8).reshape(784).astype(np.float64) / 255.0"
            f"{shift}\n\n\n"
            "def rule(images):\n"
            f'    """{self.describe()}."""\n'
            "    x = np.asarray(images, dtype=np.float64).reshape(len(images), 784) / 255.0\n"
            "    s = x @ T\n"
            f"    return ({cond}).astype(np.int64)\n"
        )


def _midpoints(sorted_s: np.ndarray) -> np.ndarray:
    """Cut values: cut i separates sorted_s[:i] from sorted_s[i:] (open ends at -inf / inf)."""
    inner = (sorted_s[:-1] + sorted_s[1:]) / 2.0
    return np.concatenate([[-np.inf], inner, [np.inf]])


def fit_score_rule(scores: np.ndarray, labels: np.ndarray, simplicity: float = 0.002) -> tuple[str, float | None, float | None, float]:
    """Best ``(kind, lo, hi, agreement)`` of a threshold, band or two-sided rule on ``scores``.

    Exact: every rule of these forms is a pair of cuts in the sorted scores; prefix sums give
    each pair's agreement. A threshold wins when within ``simplicity`` of the best band or
    two-sided rule. When no cut helps (all scores equal, or one label throughout), the result
    is the constant rule giving the majority label, written as a threshold below every score
    (``lo`` for ones, ``hi`` for zeros).

    Example:
        >>> s = np.arange(10.0); y = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
        >>> fit_score_rule(s, y)
        ('band', 2.5, 6.5, 1.0)
        >>> fit_score_rule(s, (s > 4).astype(int))
        ('threshold', 4.5, None, 1.0)
        >>> fit_score_rule(np.ones(4), np.array([1, 1, 0, 1]))   # constant scores: majority label
        ('threshold', -1.0, None, 0.75)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    check(len(s) == len(y) and len(s) >= 2, "scores and labels must have the same length (at least 2).")
    order = np.argsort(s, kind="stable")
    ss, ys = s[order], y[order]
    n = len(s)
    # distinct values only: a cut may not split equal scores
    valid = np.concatenate([[True], ss[1:] > ss[:-1], [True]])
    cuts = _midpoints(ss)
    c1 = np.concatenate([[0], np.cumsum(ys)])
    c0 = np.concatenate([[0], np.cumsum(1 - ys)])
    a = (c1 - c0).astype(np.float64)  # band [i, j) agreement = a[j] - a[i] + c0[n]
    a_valid = np.where(valid, a, np.nan)
    best: dict[str, tuple[float, float | None, float | None]] = {}
    # thresholds: 1 above cut i -> c0[i] + c1[n] - c1[i]; 1 below cut j -> c1[j] + c0[n] - c0[j]
    above = np.where(valid, c0 + c1[n] - c1, -1)
    below = np.where(valid, c1 + c0[n] - c0, -1)
    i, j = int(above.argmax()), int(below.argmax())
    best["threshold"] = max((above[i] / n, cuts[i], None), (below[j] / n, None, cuts[j]), key=lambda t: t[0])
    # band: maximize a[j] - a[i], i <= j; two-sided: maximize a[i] - a[j] (1 outside [i, j))
    run_min = np.fmin.accumulate(np.where(valid, a, np.inf))
    run_max = np.fmax.accumulate(np.where(valid, a, -np.inf))
    arg_min = _running_arg(np.where(valid, a, np.inf), np.less)
    arg_max = _running_arg(np.where(valid, a, -np.inf), np.greater)
    band = np.where(valid, a_valid - run_min, -np.inf)
    two = np.where(valid, run_max - a_valid, -np.inf)
    j = int(band.argmax())
    best["band"] = ((band[j] + c0[n]) / n, cuts[arg_min[j]], cuts[j])
    j = int(two.argmax())
    best["two-sided"] = ((two[j] + c1[n]) / n, cuts[arg_max[j]], cuts[j])
    top = max(v[0] for v in best.values())
    if best["threshold"][0] >= top - simplicity:
        kind = "threshold"
    else:
        kind = "band" if best["band"][0] >= best["two-sided"][0] else "two-sided"
    agree, lo, hi = best[kind]
    lo = None if lo is None or not np.isfinite(lo) else float(lo)
    hi = None if hi is None or not np.isfinite(hi) else float(hi)
    if kind != "threshold" and (lo is None or hi is None):  # degenerate band: one end open
        if kind == "band":
            kind, lo, hi = "threshold", (lo if hi is None else None), (hi if lo is None else None)
        else:
            kind, lo, hi = "threshold", (hi if lo is None else None), (lo if hi is None else None)
    if lo is None and hi is None:  # no cut helps: the constant rule, as a threshold below every score
        below_all = float(ss[0] - (1.0 + abs(ss[0])))
        lo, hi = (below_all, None) if 2 * int(y.sum()) >= n else (None, below_all)
    # recompute the agreement from the final rule, so it is exactly what predict gives
    rule = Rule("", np.zeros((28, 28), np.uint8), "none", kind, lo, hi)
    return kind, lo, hi, float((rule.predict_scores(s) == y).mean())


def _running_arg(x: np.ndarray, better: np.ufunc) -> np.ndarray:
    """Index of the running best (min for np.less, max for np.greater) of ``x`` up to each position.

    The first index reaching the best value wins (a later equal value does not replace it).
    """
    acc = np.minimum.accumulate if better is np.less else np.maximum.accumulate
    best_before = np.concatenate([x[:1], acc(x)[:-1]])
    new_best = better(x, best_before)
    new_best[0] = True
    return np.maximum.accumulate(np.where(new_best, np.arange(len(x)), 0))


def search_rules(
    images: np.ndarray,
    labels: np.ndarray,
    templates: Mapping[str, np.ndarray],
    centers: tuple[str, ...] = CENTERS,
    simplicity: float = 0.002,
) -> list[Rule]:
    """Every (template, centering) rule fitted to ``labels``, best agreement first.

    ``images``: uint8 ``(N, 28, 28)``; ``labels``: the model's 0/1 labels; ``templates``:
    name -> 28x28 image (uint8, or floats in [0, 1], which are quantized to uint8 so that the
    printed rule is exact).

    Example: see the module docstring.
    """
    check(len(templates) > 0, "The rule search needs at least one template.")
    labels = np.asarray(labels).reshape(-1)
    check(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels.")
    found = []
    for name, image in templates.items():
        template = to_template(image)
        for center in centers:
            if center == "mean" and template.std() == 0:
                continue
            s = similarity(images, template, center)
            kind, lo, hi, agree = fit_score_rule(s, labels, simplicity)
            found.append(Rule(name, template, center, kind, lo, hi, agree))
    found.sort(key=lambda r: (-r.agree, KINDS.index(r.kind)))
    return found


def source_agreement(source: str, images: np.ndarray, labels: np.ndarray) -> float:
    r"""Run the ``rule(images)`` defined by ``source`` (from :meth:`Rule.source`) and return its agreement with ``labels``.

    The source is the study's own printed rule (never user input): executing it checks that
    the published text gives the labels the fitted rule gives.

    Example:
        >>> src = "import numpy as np\ndef rule(images):\n    return np.zeros(len(images), dtype=np.int64)\n"
        >>> source_agreement(src, np.zeros((4, 28, 28), np.uint8), np.array([0, 0, 1, 0]))
        0.75
    """
    ns: dict[str, object] = {}
    exec(compile(source, "<rule>", "exec"), ns)
    check(callable(ns.get("rule")), "The rule source defines no function named rule.")
    return float((np.asarray(ns["rule"](images)) == labels).mean())  # type: ignore[operator]


__all__ = ["KINDS", "Rule", "fit_score_rule", "search_rules", "source_agreement"]
