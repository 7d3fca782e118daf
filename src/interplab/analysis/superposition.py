"""Superposition: how many features a layer stores, and the shapes they make.

Every measure takes weights ``W`` of shape ``[..., n_hidden, n_features]`` whose column
``W[..., :, i]`` is feature ``i``'s direction (the layout of
:class:`~interplab.models.ToyModelOfSuperposition`), so one call measures all instances of a
model at once. Writing ``W_i`` for a column and ``W_i_hat`` for its unit vector:

- feature norm ``||W_i||`` (represented when it is above about 0.5);
- interference ``sum_{j != i} (W_i_hat . W_j)^2``;
- feature dimensionality ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2``: the fraction of a
  dimension feature ``i`` gets (1 dedicated, 1/2 antipodal pair, 2/3 triangle, 3/4 tetrahedron,
  2/5 pentagon, 0 for a zero column);
- dimensions per feature ``m / ||W||_F^2`` over a whole instance;
- data-point dimensionality for a finite dataset: the same formula on the hidden vectors
  ``h_t = W x_t`` of the data points (:func:`hidden_vectors`).

:func:`classify_geometry` names what an instance shows, from these numbers alone: features
with norm above :data:`REPRESENTED` are split into groups linked by ``|cos| >=``
:data:`ORTHOGONAL_COS`, and each group is named by its cosines, its ``D_i`` and, in a plane,
its angular gaps. The answer is one part, or several joined by ``", "`` in this order:

- ``"{k} orthogonal"``: k features each with a direction no other feature interferes with;
- ``"1 antipodal pair"`` / ``"{k} antipodal pairs"``: two features with cosine near -1, alone
  in their direction (a regular 4-gon in a plane counts as 2 antipodal pairs);
- ``"triangle"``, ``"pentagon"``, ``"hexagon"``, ``"heptagon"``, ``"octagon"``, ``"regular {k}-gon"``:
  k features in a plane at equal angles with ``D_i`` near ``2/k`` (several: ``"2 triangles"``);
- ``"tetrahedron"``: 4 features with pairwise cosines near -1/3 and ``D_i`` near 3/4;
- ``"{k} irregular"``: k represented features that interfere but form none of the above;
- ``"{k} absent"``: k features with norm at most the threshold (not represented);

for example ``"2 orthogonal, 3 absent"``, ``"2 antipodal pairs, 1 absent"`` or ``"pentagon"``
(:data:`GEOMETRY_VOCABULARY` lists the templates). For the two-feature phase diagram,
:func:`classify_phase` says what happened to one feature: one of :data:`PHASES`.

Example:
    >>> import math, torch
    >>> angles = torch.arange(5) * 2 * math.pi / 5
    >>> W = torch.stack([angles.cos(), angles.sin()])   # a regular pentagon in 2D
    >>> feature_dimensionality(W)
    tensor([0.4000, 0.4000, 0.4000, 0.4000, 0.4000])
    >>> classify_geometry(W), round(dimensions_per_feature(W).item(), 3)
    ('pentagon', 0.4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from interplab.errors import check

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Norm above which a feature counts as represented.
REPRESENTED = 0.5
#: Features whose cosine is below this in absolute value do not interfere (separate groups).
ORTHOGONAL_COS = 0.25
#: An antipodal pair has cosine below this.
ANTIPODAL_COS = -0.85
#: Largest allowed deviation of a regular k-gon's angular gaps, as a fraction of ``2 pi / k``.
ANGLE_TOL = 0.25
#: Largest allowed deviation of ``D_i`` (or of a group's summed ``D``) from the ideal value,
#: as a fraction of that value.
D_TOL = 0.3
#: Names of regular k-gons; others are called ``"regular {k}-gon"``.
POLYGON_NAMES = {3: "triangle", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon"}
#: Templates of the parts of a :func:`classify_geometry` string, in the order they appear.
GEOMETRY_VOCABULARY = (
    "{k} orthogonal",
    "1 antipodal pair",
    "{k} antipodal pairs",
    "triangle", "pentagon", "hexagon", "heptagon", "octagon", "regular {k}-gon",
    "{c} triangles", "{c} pentagons", "{c} hexagons", "{c} heptagons", "{c} octagons", "{c} regular {k}-gons",
    "tetrahedron",
    "{c} tetrahedra",
    "{k} irregular",
    "{k} absent",
)
#: What :func:`classify_phase` says about a feature: not represented, a direction to itself,
#: sharing one with a feature pointing the opposite way, or anything else.
PHASES = ("absent", "dedicated", "antipodal", "other")


# -- measures -------------------------------------------------------------------------------
def feature_norms(W: Tensor) -> Tensor:
    """``||W_i||`` for every feature: ``[..., m, n] -> [..., n]``.

    Example:
        >>> feature_norms(torch.tensor([[3.0, 0.0], [4.0, 1.0]]))
        tensor([5., 1.])
    """
    return W.norm(dim=-2)


def _unit(W: Tensor, eps: float = 1e-12) -> Tensor:
    return W / W.norm(dim=-2, keepdim=True).clamp_min(eps)


def overlaps(W: Tensor) -> Tensor:
    """``O[..., i, j] = W_i_hat . W_j`` (how much of feature j lies along feature i).

    The diagonal holds the norms; a zero column gives a zero row.

    Example:
        >>> overlaps(torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
        tensor([[2.0000, 1.0000],
                [1.4142, 1.4142]])
    """
    return _unit(W).transpose(-1, -2) @ W


def feature_cosines(W: Tensor) -> Tensor:
    """Cosine similarity between feature directions, ``[..., n, n]`` (0 for a zero column).

    Example:
        >>> feature_cosines(torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 3.0]]))
        tensor([[ 1., -1.,  0.],
                [-1.,  1.,  0.],
                [ 0.,  0.,  1.]])
    """
    U = _unit(W)
    return U.transpose(-1, -2) @ U


def interference(W: Tensor) -> Tensor:
    """``sum_{j != i} (W_i_hat . W_j)^2`` for every feature: ``[..., m, n] -> [..., n]``.

    Example:
        >>> interference(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]))
        tensor([1., 1., 0.])
    """
    sq = overlaps(W).pow(2)
    return sq.sum(-1) - sq.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(W: Tensor) -> Tensor:
    """``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2``; 0 for a zero column.

    Example:
        >>> W = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
        >>> feature_dimensionality(W)   # an antipodal pair, a dedicated feature, an absent one
        tensor([0.5000, 0.5000, 1.0000, 0.0000])
    """
    norms2 = W.pow(2).sum(-2)
    denom = overlaps(W).pow(2).sum(-1)
    return torch.where(denom > 0, norms2 / denom.clamp_min(1e-30), torch.zeros_like(denom))


def dimensions_per_feature(W: Tensor) -> Tensor:
    """``m / ||W||_F^2`` per instance: ``[..., m, n] -> [...]``; 0 for an instance whose ``W`` is zero.

    A zero ``W`` stores no feature; as :func:`feature_dimensionality` does for a zero column,
    it gets 0 rather than ``m / 0``.

    Example:
        >>> dimensions_per_feature(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]))
        tensor(1.)
        >>> dimensions_per_feature(torch.zeros(2, 3))
        tensor(0.)
    """
    check(W.dim() >= 2, f"W must have shape [..., n_hidden, n_features], got {tuple(W.shape)}.")
    norm2 = W.pow(2).sum(dim=(-2, -1))
    return torch.where(norm2 > 0, W.shape[-2] / norm2.clamp_min(1e-30), torch.zeros_like(norm2))


def hidden_vectors(W: Tensor, X: Tensor) -> Tensor:
    """Hidden vectors ``h_t = W x_t`` of data points, as columns: the layout of ``W``.

    ``W`` is ``[m, n]`` with ``X`` ``[T, n]``, or ``[instances, m, n]`` with ``X``
    ``[T, instances, n]`` (the model's batch layout); the result is ``[m, T]`` or
    ``[instances, m, T]``, so every measure here applies to data points as to features.

    Example:
        >>> W = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> hidden_vectors(W, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]))
        tensor([[ 1.0000, -0.8000],
                [ 0.0000,  0.6000]])
    """
    if W.dim() == 2:
        check(X.dim() == 2 and X.shape[1] == W.shape[1],
              f"X must have shape [T, {W.shape[1]}] for W of shape {tuple(W.shape)}, got {tuple(X.shape)}.")
        return W @ X.T
    check(W.dim() == 3 and X.dim() == 3 and X.shape[1:] == (W.shape[0], W.shape[2]),
          f"X must have shape [T, {W.shape[0]}, {W.shape[-1]}] for W of shape {tuple(W.shape)}, got {tuple(X.shape)}.")
    return torch.einsum("tif,ihf->iht", X, W)


def datapoint_dimensionality(W: Tensor, X: Tensor) -> Tensor:
    """``D_t`` of each data point: :func:`feature_dimensionality` of :func:`hidden_vectors`.

    Example:
        >>> W = torch.eye(2)
        >>> X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
        >>> datapoint_dimensionality(W, X)
        tensor([0.5000, 0.5000, 1.0000])
    """
    return feature_dimensionality(hidden_vectors(W, X))


# -- naming the geometry ---------------------------------------------------------------------
def _groups(cos: Tensor, idx: list[int]) -> list[list[int]]:
    """Connected groups of features among ``idx`` linked by ``|cos| >= ORTHOGONAL_COS``."""
    left, groups = set(idx), []
    while left:
        stack, group = [min(left)], []
        left.discard(stack[0])
        while stack:
            i = stack.pop()
            group.append(i)
            linked = [j for j in left if abs(cos[i, j].item()) >= ORTHOGONAL_COS]
            for j in linked:
                left.discard(j)
            stack.extend(linked)
        groups.append(sorted(group))
    return groups


def _regular_polygon(U: Tensor) -> bool:
    """Whether unit columns ``U`` [m, k] lie in a plane at equal angular gaps."""
    k = U.shape[1]
    basis, s, _ = torch.linalg.svd(U, full_matrices=False)
    if len(s) > 2 and s[2] > 0.2 * s[0]:
        return False
    xy = basis[:, :2].T @ U
    angles = torch.atan2(xy[1], xy[0]).sort().values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    return bool((gaps - 2 * math.pi / k).abs().max() <= ANGLE_TOL * 2 * math.pi / k)


def _group_shape(W: Tensor, group: list[int], D: Tensor) -> str:
    """Name one interfering group: antipodal pair, k-gon, tetrahedron, or irregular."""
    k = len(group)
    d = D[group]
    if k == 1:
        return "orthogonal" if d.item() >= 1 - D_TOL else "irregular"
    U = _unit(W[:, group])
    cos = U.T @ U
    off = cos[~torch.eye(k, dtype=torch.bool)]
    if k == 2:
        ok = off.max() <= ANTIPODAL_COS and abs(d.sum().item() - 1) <= D_TOL
        return "antipodal pair" if ok else "irregular"
    if _regular_polygon(U) and (d - 2 / k).abs().max() <= D_TOL * 2 / k:
        return "square" if k == 4 else POLYGON_NAMES.get(k, f"regular {k}-gon")
    if k == 4 and (off + 1 / 3).abs().max() <= 0.15 and (d - 0.75).abs().max() <= D_TOL * 0.75:
        return "tetrahedron"
    return "irregular"


def geometry_groups(W: Tensor, threshold: float = REPRESENTED) -> list[tuple[str, list[int]]]:
    """The shapes in one instance ``W`` [m, n]: ``(shape, feature indices)`` pairs.

    Shapes are ``"orthogonal"`` (one feature), ``"antipodal pair"``, a polygon name,
    ``"tetrahedron"``, ``"irregular"`` or ``"absent"`` (all absent features in one entry).

    Example:
        >>> W = torch.tensor([[1.0, 0.0, -1.0, 0.1], [0.0, 1.0, 0.0, 0.0]])
        >>> geometry_groups(W)
        [('antipodal pair', [0, 2]), ('orthogonal', [1]), ('absent', [3])]
    """
    check(W.dim() == 2, f"geometry_groups takes one instance [n_hidden, n_features], got {tuple(W.shape)}.")
    W = W.detach().double().cpu()
    norms = feature_norms(W)
    present = [i for i in range(W.shape[1]) if norms[i] > threshold]
    absent = [i for i in range(W.shape[1]) if norms[i] <= threshold]
    # Dimensionality among represented features, so near-zero columns do not blur the shapes.
    D = torch.zeros(W.shape[1], dtype=W.dtype)
    if present:
        D[present] = feature_dimensionality(W[:, present])
    out = []
    for group in _groups(feature_cosines(W), present):
        shape = _group_shape(W, group, D)
        if shape == "square":  # a regular 4-gon is two orthogonal antipodal pairs
            pairs = sorted(sorted(p) for p in _pairs_by_cosine(W, group))
            out.extend(("antipodal pair", p) for p in pairs)
        else:
            out.append((shape, group))
    if absent:
        out.append(("absent", absent))
    return out


def _pairs_by_cosine(W: Tensor, group: list[int]) -> list[list[int]]:
    cos = feature_cosines(W[:, group])
    first = 0
    partner = int(cos[first].argmin())
    rest = [i for i in range(len(group)) if i not in (first, partner)]
    return [[group[first], group[partner]], [group[r] for r in rest]]


def _sides(shape: str) -> int | None:
    """The k of a polygon name (``"pentagon"`` -> 5, ``"regular 9-gon"`` -> 9), else None."""
    named = {v: k for k, v in POLYGON_NAMES.items()}
    if shape in named:
        return named[shape]
    if shape.startswith("regular ") and shape.endswith("-gon"):
        return int(shape[len("regular "):-len("-gon")])
    return None


def _plural(name: str, c: int) -> str:
    if c == 1:
        return name
    plural = "tetrahedra" if name == "tetrahedron" else name + "s"
    return f"{c} {plural}"


def geometry_string(groups: Sequence[tuple[str, Sequence[int]]]) -> str:
    """Join :func:`geometry_groups` output into the vocabulary of the module docstring.

    Example:
        >>> geometry_string([("orthogonal", [0]), ("orthogonal", [1]), ("absent", [2, 3, 4])])
        '2 orthogonal, 3 absent'
    """
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for shape, idx in groups:
        counts[shape] = counts.get(shape, 0) + 1
        sizes[shape] = sizes.get(shape, 0) + len(idx)
    parts = []
    if "orthogonal" in counts:
        parts.append(f"{sizes['orthogonal']} orthogonal")
    if "antipodal pair" in counts:
        c = counts["antipodal pair"]
        parts.append("1 antipodal pair" if c == 1 else f"{c} antipodal pairs")
    polygons = sorted((k, shape) for shape in counts if (k := _sides(shape)))
    parts.extend(_plural(shape, counts[shape]) for _, shape in polygons)
    if "tetrahedron" in counts:
        parts.append(_plural("tetrahedron", counts["tetrahedron"]))
    if "irregular" in counts:
        parts.append(f"{sizes['irregular']} irregular")
    if "absent" in counts:
        parts.append(f"{sizes['absent']} absent")
    return ", ".join(parts)


def classify_geometry(W: Tensor, threshold: float = REPRESENTED) -> str | list[str]:
    """Name the geometry of ``W`` [m, n] (a string) or of every instance of [I, m, n] (a list).

    See the module docstring for the vocabulary and :func:`geometry_groups` for the rules.

    Example:
        >>> W = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.1, 0.0]])
        >>> classify_geometry(W)
        '2 orthogonal, 3 absent'
        >>> classify_geometry(torch.stack([W, -W]))
        ['2 orthogonal, 3 absent', '2 orthogonal, 3 absent']
    """
    if W.dim() == 3:
        return [geometry_string(geometry_groups(w, threshold)) for w in W]
    return geometry_string(geometry_groups(W, threshold))


def classify_phase(W: Tensor, feature: int = 1, threshold: float = REPRESENTED) -> str | list[str]:
    """What happened to ``feature``: one of :data:`PHASES`, per instance for ``[I, m, n]``.

    ``absent``: its norm is at most ``threshold``; ``dedicated``: represented and no other
    represented feature interferes with it; ``antipodal``: it shares its direction with
    exactly one other represented feature pointing the opposite way; ``other`` otherwise.

    Example:
        >>> classify_phase(torch.tensor([[[1.0, 0.2]], [[0.0, 1.0]], [[1.0, -0.9]]]))
        ['absent', 'dedicated', 'antipodal']
    """
    if W.dim() == 3:
        return [classify_phase(w, feature, threshold) for w in W]  # type: ignore[misc]
    check(W.dim() == 2 and 0 <= feature < W.shape[1],
          f"feature {feature} is not a column of W with shape {tuple(W.shape)}.")
    W = W.detach().double().cpu()
    norms = feature_norms(W)
    if norms[feature] <= threshold:
        return "absent"
    cos = feature_cosines(W)[feature]
    others = [j for j in range(W.shape[1]) if j != feature and norms[j] > threshold
              and abs(cos[j].item()) >= ORTHOGONAL_COS]
    if not others:
        return "dedicated"
    if len(others) == 1 and cos[others[0]] <= ANTIPODAL_COS:
        return "antipodal"
    return "other"


# -- curves ----------------------------------------------------------------------------------
def find_plateaus(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor, rel_width: float = 0.08,
                  min_points: int = 3, min_span: float = 1.3) -> list[float]:
    """Values where the curve ``y(x)`` sticks: medians of flat runs of points, in order of x.

    A run is consecutive points (sorted by ``x``) whose ``y`` values stay within
    ``rel_width`` times their median of each other, at least ``min_points`` long, over which
    ``x`` grows by at least the factor ``min_span``. Runs are found greedily from the left;
    neighbouring runs with medians that close merge. On a log-x axis this keeps stretches
    where ``y`` falls much more slowly than a power law with exponent ``rel_width / ln(min_span)``.

    Example:
        >>> x = [1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]
        >>> y = [1.0, 1.0, 0.99, 0.8, 0.6, 0.51, 0.5, 0.5, 0.49, 0.4, 0.3, 0.25]
        >>> find_plateaus(x, y)
        [1.0, 0.5]
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    check(x.shape == y.shape and x.dim() == 1, "x and y must be 1D sequences of the same length.")
    order = x.argsort()
    x, y = x[order], y[order]

    def flat(v: Tensor) -> bool:
        return bool(v.max() - v.min() <= rel_width * v.abs().quantile(0.5))

    runs: list[Tensor] = []
    i, n = 0, len(x)
    while i < n:
        j = i + 1
        while j < n and flat(y[i:j + 1]):
            j += 1
        if j - i >= min_points and x[j - 1] >= min_span * x[i]:
            if runs and flat(torch.stack([runs[-1].quantile(0.5), y[i:j].quantile(0.5)])):
                runs[-1] = torch.cat([runs[-1], y[i:j]])
            else:
                runs.append(y[i:j])
            i = j
        else:
            i += 1
    return [round(float(r.quantile(0.5)), 4) for r in runs]


# -- pictures ---------------------------------------------------------------------------------
def plot_vectors_2d(V: Tensor, ax: Axes, colors: Sequence[Any] | None = None, title: str = "",
                    limit: float | None = None) -> Axes:
    """Draw the columns of ``V`` [2, k] as lines from the origin with a dot at the tip.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots()
        >>> _ = plot_vectors_2d(torch.eye(2), ax, title="two features"); plt.close(fig)
    """
    import matplotlib.pyplot as plt

    check(V.dim() == 2 and V.shape[0] == 2, f"plot_vectors_2d needs [2, k] vectors, got {tuple(V.shape)}.")
    V = V.detach().float().cpu()
    k = V.shape[1]
    if colors is None:
        colors = [plt.cm.viridis(c) for c in torch.linspace(0, 0.9, k).tolist()]
    for j in range(k):
        ax.plot([0, V[0, j]], [0, V[1, j]], color=colors[j], lw=1.5)
        ax.scatter([V[0, j]], [V[1, j]], color=[colors[j]], s=18, zorder=3)
    lim = limit if limit is not None else max(1.2, 1.1 * float(V.abs().max()))
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="#ccc", lw=0.5, zorder=0)
    ax.axvline(0, color="#ccc", lw=0.5, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


_PHASE_COLORS = {"absent": "#4c72b0", "dedicated": "#dd8452", "antipodal": "#55a868", "other": "#999999"}


def plot_phase_diagram(cells: Sequence[Sequence[str]], sparsity: Sequence[float],
                       importance: Sequence[float]) -> Figure:
    """The two-feature phase diagram: ``cells[i][j]`` at ``importance[i]``, ``sparsity[j]``.

    x is feature density ``1 - S`` (log, sparse to the right), y the relative importance of
    the second feature (log); cells are coloured by phase and black lines mark the borders
    between regions.

    Example:
        >>> fig = plot_phase_diagram([["absent", "antipodal"], ["dedicated", "dedicated"]],
        ...                          [0.0, 0.9], [0.5, 2.0])
        >>> len(fig.axes)
        1
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    density = torch.as_tensor([1 - s for s in sparsity], dtype=torch.float64)
    imp = torch.as_tensor(list(importance), dtype=torch.float64)
    check(all(d > 0 for d in density), "the phase diagram needs sparsity below 1.")
    codes = torch.tensor([[PHASES.index(c) for c in row] for row in cells])
    check(codes.shape == (len(imp), len(density)), "cells must be [len(importance)][len(sparsity)].")

    def edges(v: Tensor) -> Tensor:  # cell edges on a log axis
        lv = v.log()
        mid = (lv[1:] + lv[:-1]) / 2
        step0 = (lv[1] - lv[0]) if len(v) > 1 else torch.tensor(0.5)
        step1 = (lv[-1] - lv[-2]) if len(v) > 1 else torch.tensor(0.5)
        return torch.cat([lv[:1] - step0 / 2, mid, lv[-1:] + step1 / 2]).exp()

    xe, ye = edges(density), edges(imp)
    fig, ax = plt.subplots(figsize=(6.2, 4.8))
    cmap = ListedColormap([_PHASE_COLORS[p] for p in PHASES])
    ax.pcolormesh(xe.numpy(), ye.numpy(), codes.numpy(), cmap=cmap, vmin=-0.5, vmax=len(PHASES) - 0.5)
    for i in range(codes.shape[0]):  # borders between cells of different phase
        for j in range(codes.shape[1]):
            if j + 1 < codes.shape[1] and codes[i, j] != codes[i, j + 1]:
                ax.plot([xe[j + 1], xe[j + 1]], [ye[i], ye[i + 1]], color="k", lw=1.6)
            if i + 1 < codes.shape[0] and codes[i, j] != codes[i + 1, j]:
                ax.plot([xe[j], xe[j + 1]], [ye[i + 1], ye[i + 1]], color="k", lw=1.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("feature density 1 - S (sparser to the right)")
    ax.set_ylabel("relative importance of feature 2")
    present = sorted({p for row in cells for p in row}, key=PHASES.index)
    labels = {"absent": "feature 2 not represented", "dedicated": "feature 2 gets the dimension",
              "antipodal": "antipodal pair (superposition)", "other": "other"}
    ax.legend(handles=[Patch(color=_PHASE_COLORS[p], label=labels[p]) for p in present],
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    return fig


def plot_dimensionality(inv_density: Sequence[float] | Tensor, dims_per_feature: Sequence[float] | Tensor,
                        feature_dims: Tensor | None = None, plateaus: Sequence[float] = ()) -> Figure:
    """Dimensions per feature against ``1/(1-S)``, with each feature's ``D_i`` as dots.

    ``feature_dims`` is ``[len(inv_density), n]`` (one row per instance); detected plateaus
    are drawn as dashed lines.

    Example:
        >>> fig = plot_dimensionality([1, 2, 4], [1.0, 0.7, 0.5], torch.rand(3, 4), [1.0, 0.5])
        >>> len(fig.axes)
        1
    """
    import matplotlib.pyplot as plt

    x = torch.as_tensor(inv_density, dtype=torch.float64)
    y = torch.as_tensor(dims_per_feature, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if feature_dims is not None:
        fd = feature_dims.detach().double().cpu()
        xs = x[:, None].expand_as(fd)
        jitter = torch.exp(0.02 * torch.randn(fd.shape, generator=torch.Generator().manual_seed(0)))
        ax.scatter((xs * jitter).flatten().numpy(), fd.flatten().numpy(), s=2, alpha=0.15,
                   color="#4c72b0", label="feature dimensionality $D_i$", rasterized=True)
    ax.plot(x.numpy(), y.numpy(), color="k", lw=1.8, label="dimensions per feature $m/||W||_F^2$")
    for p in plateaus:
        ax.axhline(p, color="#c44e52", ls="--", lw=1)
        ax.text(x.max().item(), p, f" {p:.3g}", color="#c44e52", va="bottom", ha="right", fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("1 / (1 - S)")
    ax.set_ylabel("dimensions per feature")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_finite_dimensionality(T: Sequence[int], feature_dims: Sequence[Tensor], datapoint_dims: Sequence[Tensor],
                               test_loss: Sequence[float] | None = None) -> Figure:
    """``D_i`` of features and ``D_t`` of data points against dataset size ``T`` (log x).

    Every value is a dot (features blue, data points red); ``test_loss`` is drawn on a second
    axis when given.

    Example:
        >>> fig = plot_finite_dimensionality([3, 100], [torch.rand(5), torch.rand(5)],
        ...                                  [torch.rand(3), torch.rand(100)], [0.1, 0.05])
        >>> len(fig.axes)
        2
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    g = torch.Generator().manual_seed(0)
    for t, fd, dd in zip(T, feature_dims, datapoint_dims):
        for d, color, shift in ((fd, "#4c72b0", 0.93), (dd, "#c44e52", 1.07)):
            d = d.detach().double().cpu().flatten()
            xs = t * shift * torch.exp(0.03 * torch.randn(len(d), generator=g, dtype=torch.float64))
            ax.scatter(xs.numpy(), d.numpy(), s=4, alpha=0.4, color=color, rasterized=True)
    ax.scatter([], [], color="#4c72b0", label="features $D_i$")
    ax.scatter([], [], color="#c44e52", label="data points $D_t$")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("dataset size T")
    ax.set_ylabel("dimensionality")
    if test_loss is not None:
        ax2 = ax.twinx()
        ax2.plot(list(T), list(test_loss), color="k", lw=1.2, marker="o", ms=3, label="test loss")
        ax2.set_yscale("log")
        ax2.set_ylabel("test loss")
        ax2.legend(fontsize=8, loc="upper right")
    ax.legend(fontsize=8, loc="upper left")
    return fig
