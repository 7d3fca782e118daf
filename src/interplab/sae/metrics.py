"""How good is a dictionary: sparsity, reconstruction, splice-in loss, density, and geometry.

- On activations: :func:`l0`, :func:`mse`, :func:`variance_explained`, :func:`feature_density`
  with :func:`density_counts` (dead, below 1e-4, below 1e-5) and :func:`density_histogram`.
- In the model: :func:`loss_recovered` splices a reconstruction into the model at its site and
  compares ``(L_ablated - L_sae) / (L_ablated - L_clean)`` for zero and mean ablation; on a
  language model :func:`lm_loss_recovered` does it with the next-token cross-entropy
  (:func:`next_token_ce`) at every token position of the SAE's site.
- Against a known dictionary: :func:`mmcs` (mean max cosine similarity).
- Per feature: :func:`neuron_sparsity` (share of the decoder row's squared norm in its top
  neuron and the next 9), :func:`kurtosis` (in the neuron basis), :func:`enc_dec_cosine`.

Example:
    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> l0(torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0]])), mse(x, x), variance_explained(x, x)
    (1.5, 0.0, 1.0)
    >>> mmcs(torch.eye(3), torch.eye(3)[:2])
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from interplab.tasks.lm import next_token_ce
from interplab.errors import check
from interplab.instrument import Site, run_batches
from interplab.sae.buffer import collect


def check_rows(x: Tensor, what: str) -> None:
    """Raise :class:`InterplabError` unless ``x`` has at least one row (a mean over no rows is undefined).

    Example:
        >>> check_rows(torch.zeros(0, 3), "l0")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: l0 needs at least one row of activations, got shape (0, 3).
    """
    check(x.dim() >= 1 and len(x) > 0, f"{what} needs at least one row of activations, got shape {tuple(x.shape)}.")


def l0(f: Tensor) -> float:
    """Mean number of nonzero features per row of codes ``f [N, d_sae]`` (at least one row)."""
    check_rows(f, "l0")
    return (f != 0).float().sum(-1).mean().item()


def mse(x: Tensor, x_hat: Tensor) -> float:
    """Mean over rows (at least one) of the squared reconstruction error (summed over dimensions)."""
    check_rows(x, "mse")
    return (x - x_hat).pow(2).sum(-1).mean().item()


def variance_explained(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of the variance of ``x`` (about its mean) that the reconstruction explains.

    ``x``, ``x_hat``: ``[rows, d]``. Raises :class:`InterplabError` when ``x`` has no rows or
    no variance (every row the same): the fraction is then undefined.

    Example:
        >>> x = torch.tensor([[0.0], [2.0]])
        >>> variance_explained(x, torch.tensor([[1.0], [1.0]]))
        0.0
    """
    check_rows(x, "variance_explained")
    total = (x - x.mean(0)).pow(2).sum()
    check(bool(total > 0), "The activations have no variance (every row is the same), so the variance explained "
                           "is undefined.")
    return (1 - (x - x_hat).pow(2).sum() / total).item()


def feature_density(f: Tensor) -> Tensor:
    """Fraction of rows (at least one) on which each feature is active, ``[d_sae]``."""
    check_rows(f, "feature_density")
    return (f > 0).float().mean(0)


def density_counts(density: Tensor) -> dict[str, int]:
    """Counts of dead features (never active) and of ultra-low density ones.

    Example:
        >>> density_counts(torch.tensor([0.0, 5e-6, 5e-5, 0.2]))
        {'dead': 1, 'below_1e-4': 3, 'below_1e-5': 2}
    """
    return {"dead": int((density == 0).sum()), "below_1e-4": int((density < 1e-4).sum()),
            "below_1e-5": int((density < 1e-5).sum())}


def density_histogram(densities: dict[str, Tensor], n_rows: int | None = None) -> Any:
    """A matplotlib figure: histogram of log10 feature density, one series per name.

    Dead features are drawn at ``log10(1 / n_rows)`` minus one (left of every live feature)
    when ``n_rows`` is given, else left out.

    Example:
        >>> fig = density_histogram({"sae": torch.tensor([0.0, 0.01, 0.1])}, n_rows=1000)
        >>> len(fig.axes)
        1
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    floor = None if n_rows is None else torch.log10(torch.tensor(1.0 / n_rows)).item() - 1
    for name, d in densities.items():
        logd = torch.log10(d.clamp_min(1e-30))
        if floor is None:
            logd = logd[d > 0]
        else:
            logd = torch.where(d > 0, logd, torch.tensor(floor, dtype=logd.dtype, device=logd.device))
        ax.hist(logd.float().cpu().numpy(), bins=40, alpha=0.55, label=name)
    ax.set_xlabel("log10 feature density" + ("" if floor is None else " (dead at the far left)"))
    ax.set_ylabel("features")
    ax.legend(fontsize=8)
    return fig


def mmcs(learned: Tensor, true: Tensor) -> float:
    """Mean over the true features of the largest cosine with any learned feature.

    ``learned [n_learned, d]`` and ``true [n_true, d]`` hold one direction per row.

    Example: see the module docstring.
    """
    check(learned.shape[-1] == true.shape[-1], f"learned and true dictionaries differ in width: "
          f"{learned.shape[-1]} and {true.shape[-1]}.")
    cos = F.normalize(true.float(), dim=-1) @ F.normalize(learned.float(), dim=-1).T
    return cos.max(dim=1).values.mean().item()


def neuron_sparsity(W_dec: Tensor) -> tuple[Tensor, Tensor]:
    """Per feature: share of the decoder row's squared norm in its top neuron and in the next 9.

    Example:
        >>> top1, next9 = neuron_sparsity(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
        >>> top1.tolist(), next9.tolist()
        ([1.0, 0.5], [0.0, 0.5])
    """
    sq = W_dec.detach().float().pow(2)
    share = sq.sort(dim=1, descending=True).values / sq.sum(1, keepdim=True).clamp_min(1e-30)
    return share[:, 0], share[:, 1:10].sum(1)


def kurtosis(W_dec: Tensor) -> Tensor:
    """Per feature: kurtosis ``E[(w - mean)^4] / Var(w)^2`` of its decoder row's entries (the
    neuron basis); 3 for Gaussian entries, large when a few neurons carry the feature.

    Example:
        >>> float(kurtosis(torch.tensor([[1.0, -1.0, 1.0, -1.0]]))[0])
        1.0
    """
    w = W_dec.detach().float()
    c = w - w.mean(1, keepdim=True)
    return c.pow(4).mean(1) / c.pow(2).mean(1).pow(2).clamp_min(1e-30)


def enc_dec_cosine(sae: torch.nn.Module) -> Tensor:
    """Per feature: cosine between its encoder column ``W_enc[:, i]`` and decoder row ``W_dec[i]``."""
    return F.cosine_similarity(sae.W_enc.detach().T, sae.W_dec.detach(), dim=1)


def cross_entropy_at(position: int = -1) -> Callable[[Tensor, Tensor], Tensor]:
    """A loss for :func:`loss_recovered`: mean cross-entropy of logits ``[N, pos, V]`` at
    ``position`` against labels ``[N]``.

    Example:
        >>> cross_entropy_at(-1)(torch.zeros(2, 3, 4), torch.tensor([0, 1])).item() == torch.log(torch.tensor(4.0)).item()
        True
    """
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits[:, position].float(), labels)

    return loss


@torch.no_grad()
def lm_loss_recovered(model: torch.nn.Module, tokens: Tensor, sae: torch.nn.Module, site: Any = None,
                      reconstruct: Callable[[Tensor], Tensor] | None = None, batch_size: int = 16,
                      mean_act: Tensor | None = None) -> dict[str, float]:
    """:func:`loss_recovered` on a language model: next-token cross-entropy on ``tokens [N, T]``
    with ``sae``'s reconstruction (``sae.reconstruct``, raw activations in and out) spliced in.

    ``site`` defaults to every position but BOS of the SAE's hook
    (:class:`interplab.sae.store.TokenSite`); ``reconstruct`` replaces the SAE's own (e.g. an
    inference-time readout). Zero and mean ablation act on the same rows.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=5, d_model=8, n_heads=2, d_mlp=16), seed=0)
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=16, hook_name="blocks.0.hook_resid_post"))
        >>> r = lm_loss_recovered(m, torch.randint(6, (8, 5)), sae, reconstruct=lambda a: a)
        >>> r["recovered_zero"], r["recovered_mean"]
        (1.0, 1.0)
    """
    from interplab.sae.store import TokenSite

    site = site if site is not None else TokenSite(sae.cfg.hook_name)
    recon = reconstruct if reconstruct is not None else sae.reconstruct
    return loss_recovered(model, tokens, tokens, site, recon, next_token_ce, mean_act=mean_act, batch_size=batch_size)


@torch.no_grad()
def spliced_loss(
    model: torch.nn.Module,
    inputs: Tensor,
    labels: Tensor,
    site: Site,
    replace: Callable[[Tensor], Tensor] | None,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_size: int = 4096,
) -> float:
    """Mean loss of the model with ``site``'s rows replaced by ``replace(rows)`` (None: clean)."""
    total, n = 0.0, 0
    hooks = [] if replace is None else [(site.name, lambda a, hook: site.write(a, replace(site.read(a))))]
    for rows, out in run_batches(model, inputs, batch_size, hooks):
        yi = labels[rows]
        yi = yi.to(out.device) if isinstance(out, Tensor) else yi  # host labels against the model's output
        total += loss_fn(out, yi).item() * len(yi)
        n += len(yi)
    return total / n


@torch.no_grad()
def loss_recovered(
    model: torch.nn.Module,
    inputs: Tensor,
    labels: Tensor,
    site: Site,
    reconstruct: Callable[[Tensor], Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    mean_act: Tensor | None = None,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Splice ``reconstruct(rows)`` into the model at ``site`` and compare losses.

    Returns ``clean``, ``sae`` (the spliced loss), ``zero`` and ``mean`` (ablations; the mean
    over ``inputs`` unless ``mean_act`` is given), and ``recovered_zero`` /
    ``recovered_mean`` = ``(L_ablated - L_sae) / (L_ablated - L_clean)``.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> m = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=2), seed=0)
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y)
        >>> r = loss_recovered(m, x, y, Site("layers.0.hook_post"), lambda a: a, ce)
        >>> r["recovered_zero"], r["recovered_mean"]
        (1.0, 1.0)
    """
    if mean_act is None:
        mean_act = collect(model, site, inputs, batch_size).mean(0)
    mean_row = mean_act
    clean = spliced_loss(model, inputs, labels, site, None, loss_fn, batch_size)
    spliced = spliced_loss(model, inputs, labels, site, reconstruct, loss_fn, batch_size)
    zero = spliced_loss(model, inputs, labels, site, torch.zeros_like, loss_fn, batch_size)
    mean = spliced_loss(model, inputs, labels, site, lambda a: mean_row.expand_as(a), loss_fn, batch_size)

    def frac(ablated: float) -> float:
        gap = ablated - clean
        return (ablated - spliced) / gap if abs(gap) > 1e-12 else float("nan")

    return {"clean": clean, "sae": spliced, "zero": zero, "mean": mean,
            "recovered_zero": frac(zero), "recovered_mean": frac(mean)}


def feature_auc(acts: Tensor, labels: Tensor) -> Tensor:
    """ROC AUC of every feature's activation ``acts [n, F]`` as a detector of ``labels [n]``
    (bool), ``[F]``; ties (e.g. the many zeros) count one half (Mann-Whitney with average ranks).

    Example:
        >>> acts = torch.tensor([[0.0, 1.0], [2.0, 1.0], [3.0, 0.0]])
        >>> feature_auc(acts, torch.tensor([False, True, True])).tolist()
        [1.0, 0.25]
    """
    from scipy.stats import rankdata

    labels = labels.bool().cpu()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    check(n_pos > 0 and n_neg > 0, "AUC needs both positive and negative examples.")
    ranks = torch.from_numpy(rankdata(acts.detach().float().cpu().numpy(), axis=0))  # [n, F], average ties
    return ((ranks[labels].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).float()


@torch.no_grad()
def evaluate_sae(sae: torch.nn.Module, acts: Tensor, k: int | None = None, batch_size: int = 8192) -> dict[str, float]:
    """L0, MSE, variance explained, dead and ultra-low counts of an SAE on activation rows.

    Example:
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> r = evaluate_sae(SAE(SAEConfig(d_in=4, d_sae=8)), torch.randn(100, 4))
        >>> sorted(r)
        ['below_1e-4', 'below_1e-5', 'dead', 'l0', 'mse', 'variance_explained']
    """
    fs, xh = [], []
    for chunk in acts.split(batch_size):
        f = sae.encode(chunk, k)
        fs.append(f)
        xh.append(sae.decode(f))
    f, x_hat = torch.cat(fs), torch.cat(xh)
    return {"l0": l0(f), "mse": mse(acts, x_hat), "variance_explained": variance_explained(acts, x_hat),
            **density_counts(feature_density(f))}
