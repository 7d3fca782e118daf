"""Steering: add a vector to the residual stream, and the SAE views of that vector.

A steering vector (activation addition, Turner et al. 2023, "Steering Language Models With
Activation Engineering") is the difference of a site's activations between a positive and a
negative prompt, per position, or between the mean activations of two prompt sets aligned at
their ends (:func:`steering_vector`); added with coefficient ``c`` to another forward pass at
the same site (:func:`steering_hook`) it moves the model's behaviour. Where it is read matters:
at a prompt's last token the residual stream says what that token *is* as well as what comes
next, so a vector meant to make the model *write* a word is best read at the positions that
predict it (e.g. ``"... plays the sport of"`` for people who play it against people who do not).
Given an SAE at that site, four views of the vector (the SAE steering comparisons of the GDM
mech-interp team's progress update, 2024):

- ``features``: encode both prompts, keep the ``k`` features whose activation differs most and
  decode only their difference (a sparse reconstruction of the vector);
- ``single``: one feature's decoder row (by default the feature with the largest difference),
  scaled to the vector's norm;
- ``recon_diff``: the difference of the two SAE reconstructions (no error term);
- ``projected``: the original vector with the contributions of the *irrelevant* features (those
  whose activation differs between the prompts but which are not among the ``k``) taken out:
  ``v - sum_j df_j W_dec[j]`` over them; the SAE's error term stays. (Projecting onto the
  orthogonal complement of their decoder rows instead would remove everything once they span
  the residual stream, as they do with a few dozen active features per token.)

:func:`coefficient_sweep` measures each vector over coefficients: the fraction of sampled
continuations of a prompt that satisfy a predicate (P(success)), and the next-token loss on
ordinary text with the vector added (the side effect); :func:`pareto_front` and
:func:`pareto_plot` compare methods.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=9, n_ctx=12, d_model=16, n_heads=2, d_mlp=32), seed=0)
    >>> v = steering_vector(m, "blocks.0.hook_resid_pre", torch.tensor([[1, 2]]), torch.tensor([[1, 3]]))
    >>> v.shape, bool(v[0].abs().max() < 1e-6)  # position 0 holds the same token in both prompts
    (torch.Size([2, 16]), True)
    >>> out = sample_continuations(m, torch.tensor([1, 4]), n=3, max_new_tokens=4, hooks=[steering_hook("blocks.0.hook_resid_pre", v, 2.0)])
    >>> out.shape
    torch.Size([3, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.devices import model_device
from interplab.errors import check
from interplab.instrument import cache
from interplab.models.base import Positions, readout_positions

Hook = tuple[str, Callable[..., Tensor]]


Prompts = Union[Tensor, Sequence[Tensor]]
"""Prompts: a token tensor ``[n, P]`` (or ``[P]``), or a sequence of 1-D token tensors of any lengths."""


@torch.no_grad()
def end_aligned_acts(model: torch.nn.Module, hook_name: str, prompts: Prompts) -> Tensor:
    """``hook_name``'s activations on ``prompts``, aligned at the prompts' ends: ``[n, P, d]``.

    A tensor ``[n, P]`` runs as one batch. A sequence of 1-D token tensors may mix lengths:
    prompts of one length run together, and each keeps its last ``P`` positions, ``P`` the
    shortest prompt's length (position ``-1`` is every prompt's last token). Tokens go to the
    model's device. Raises :class:`InterplabError` for no prompts or an empty one.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=9, n_ctx=8, d_model=16, n_heads=2, d_mlp=32), seed=0)
        >>> a = end_aligned_acts(m, "blocks.0.hook_resid_pre", [torch.tensor([1, 2, 3]), torch.tensor([4, 3])])
        >>> a.shape
        torch.Size([2, 2, 16])
    """
    device = model_device(model)
    if isinstance(prompts, Tensor):
        check(prompts.numel() > 0, "There are no prompt tokens.")
        rows = prompts.reshape(-1, prompts.shape[-1]).to(device)
        return cache(model, rows, names=hook_name)[1][hook_name]
    seqs = [torch.as_tensor(p).reshape(-1) for p in prompts]
    check(len(seqs) > 0 and all(len(p) > 0 for p in seqs), "Steering needs at least one prompt, and no empty prompt.")
    P = min(len(p) for p in seqs)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(seqs):
        by_length.setdefault(len(p), []).append(i)
    out: list[Tensor | None] = [None] * len(seqs)
    for length, idx in by_length.items():
        acts = cache(model, torch.stack([seqs[i] for i in idx]).to(device), names=hook_name)[1][hook_name]
        for j, i in enumerate(idx):
            out[i] = acts[j, length - P:]
    return torch.stack([a for a in out if a is not None])


@torch.no_grad()
def steering_vector(model: torch.nn.Module, hook_name: str, positive: Prompts, negative: Prompts,
                    positions: Positions = None) -> Tensor:
    """The activation difference ``positive - negative`` at ``hook_name``, averaged over prompts: ``[P, d]``.

    ``positive`` and ``negative`` as tensors ``[pairs, P]`` (or ``[P]``) of equal shape are prompt
    pairs (pad the shorter prompt of a pair, e.g. with spaces, as ActAdd does); the vector is
    the mean of the pairs' differences. As sequences of 1-D token tensors they may differ in
    number and length: the vector is the difference of the two sets' mean activations aligned
    at the prompts' ends (:func:`end_aligned_acts`), over the last ``P`` positions, ``P`` the
    shortest prompt's length (mean-difference steering, as in contrastive activation addition,
    Rimsky et al. 2023). ``positions`` keeps only those of the ``P`` positions (any form
    :func:`interplab.models.base.readout_positions` reads; ``-1``: the last token, giving
    ``[1, d]``). Raises :class:`InterplabError` when paired tensors differ in shape.

    Example: see the module docstring.
    """
    if isinstance(positive, Tensor) and isinstance(negative, Tensor):
        positive, negative = positive.reshape(-1, positive.shape[-1]), negative.reshape(-1, negative.shape[-1])
        check(positive.shape == negative.shape, f"Positive and negative prompts must have the same shape, got "
              f"{tuple(positive.shape)} and {tuple(negative.shape)}; pad the shorter one.")
    a_pos, a_neg = _paired_acts(model, hook_name, positive, negative, positions)
    return a_pos.mean(0) - a_neg.mean(0)


def _paired_acts(model: torch.nn.Module, hook_name: str, positive: Prompts, negative: Prompts,
                 positions: Positions = None) -> tuple[Tensor, Tensor]:
    """Both prompt sets' activations ``[n, P, d]`` over the same last ``P`` positions (then ``positions`` of them)."""
    a_pos, a_neg = end_aligned_acts(model, hook_name, positive), end_aligned_acts(model, hook_name, negative)
    P = min(a_pos.shape[1], a_neg.shape[1])
    a_pos, a_neg = a_pos[:, a_pos.shape[1] - P:], a_neg[:, a_neg.shape[1] - P:]
    index = readout_positions(positions, P)
    return (a_pos, a_neg) if index is None else (a_pos[:, index.to(a_pos.device)], a_neg[:, index.to(a_neg.device)])


def steering_hook(hook_name: str, vector: Tensor, coef: float, start: int = 0) -> Hook:
    """A forward hook adding ``coef * vector`` at ``hook_name``.

    ``vector [d]`` is added at every position; ``vector [P, d]`` at positions ``start`` to
    ``start + P - 1`` (those present in the sequence).

    Example:
        >>> name, fn = steering_hook("h", torch.ones(2, 3), 0.5, start=1)
        >>> fn(torch.zeros(1, 4, 3), None)[0, :, 0].tolist()
        [0.0, 0.5, 0.5, 0.0]
    """
    check(vector.dim() in (1, 2), f"A steering vector is [d] or [P, d], got shape {tuple(vector.shape)}.")

    def add(act: Tensor, hook: Any) -> Tensor:
        v = (coef * vector).to(act.device, act.dtype)
        if v.dim() == 1:
            return act + v
        end = min(act.shape[1], start + v.shape[0])
        if end <= start:
            return act
        act = act.clone()
        act[:, start:end] += v[: end - start]
        return act

    return hook_name, add


@torch.no_grad()
def sample_continuations(model: torch.nn.Module, prompt: Tensor, n: int, max_new_tokens: int,
                         hooks: Sequence[Hook] = (), temperature: float = 1.0, seed: int = 0) -> Tensor:
    """``n`` sampled continuations ``[n, max_new_tokens]`` of ``prompt [T]`` with ``hooks`` active.

    :func:`interplab.lm.generate.generate` (temperature 0: greedy; the randomness from
    ``seed``) run under the hooks. The prompt plus continuation must fit the model's context,
    so that position-wise steering stays where it was put.

    Example: see the module docstring.
    """
    from interplab.lm.generate import generate

    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    check(n_ctx is None or len(prompt) + max_new_tokens <= n_ctx, f"The prompt ({len(prompt)} tokens) and "
          f"{max_new_tokens} new tokens do not fit the model's context of {n_ctx}.")
    with model.hooks(fwd_hooks=list(hooks)):
        out = generate(model, prompt.reshape(1, -1).expand(n, -1), max_new_tokens, temperature, seed=seed)
    return out[:, len(prompt):]


@torch.no_grad()
def sae_views(sae: Any, model: torch.nn.Module, positive: Prompts, negative: Prompts, k: int = 4,
              feature: int | None = None, positions: Positions = None) -> dict[str, Tensor]:
    """The original steering vector and its SAE views (see the module docstring), each ``[P, d]``.

    ``positive``, ``negative`` and ``positions`` as in :func:`steering_vector` (the features are
    chosen by their differences at those positions only). ``sae`` reads ``sae.cfg.hook_name`` (raw activations, see
    :meth:`interplab.sae.model.SAE.features`); ``k`` features make the sparse view and decide
    which features count as relevant; ``feature`` fixes the single feature. Also returns
    ``feature_diff [P, d_sae]`` (the decomposition) under that key.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = Transformer(TransformerConfig(d_vocab=9, n_ctx=8, d_model=16, n_heads=2, d_mlp=32), seed=0)
        >>> sae = SAE(SAEConfig(d_in=16, d_sae=64, hook_name="blocks.0.hook_resid_pre"), seed=0)
        >>> views = sae_views(sae, m, torch.tensor([[1, 2]]), torch.tensor([[1, 3]]), k=2)
        >>> sorted(views)
        ['feature_diff', 'features', 'original', 'projected', 'recon_diff', 'single']
    """
    hook = sae.cfg.hook_name
    a_pos, a_neg = _paired_acts(model, hook, positive, negative, positions)
    original = a_pos.mean(0) - a_neg.mean(0)
    f_pos, f_neg = sae.features(a_pos).mean(0), sae.features(a_neg).mean(0)  # [P, d_sae]
    diff = f_pos - f_neg
    W = sae.W_dec.detach() / sae.cfg.act_scale  # decoder rows in the raw activation scale
    score = diff.abs().sum(0)  # [d_sae]
    top = score.topk(min(k, len(score))).indices
    sparse = torch.zeros_like(diff)
    sparse[:, top] = diff[:, top]
    recon_diff = sae.reconstruct(a_pos).mean(0) - sae.reconstruct(a_neg).mean(0)
    i = int(feature) if feature is not None else int(diff.sum(0).argmax())
    single = W[i].expand_as(original) * (original.norm(dim=-1, keepdim=True) / W[i].norm().clamp_min(1e-12))
    projected = original - (diff - sparse) @ W
    return {"original": original, "features": sparse @ W, "single": single, "recon_diff": recon_diff,
            "projected": projected, "feature_diff": diff}


@torch.no_grad()
def coefficient_sweep(model: torch.nn.Module, hook_name: str, vectors: Mapping[str, Tensor], coefs: Sequence[float],
                      prompt: Tensor, predicate: Callable[[Tensor], bool], text: Tensor, n_samples: int = 16,
                      max_new_tokens: int = 8, temperature: float = 1.0, start: int = 0, seed: int = 0,
                      batch_size: int = 16, quiet: bool = False) -> dict[str, list[list[float]]]:
    """For each vector and coefficient: ``[coef, p_success, spliced_loss]``.

    ``p_success``: the fraction of ``n_samples`` continuations of ``prompt`` (sampled with the
    vector added from position ``start``) for which ``predicate(continuation_tokens)`` holds.
    ``spliced_loss``: the next-token cross-entropy on ``text [N, T]`` with the vector added the
    same way (the cost on ordinary text). Every method and coefficient samples with the same
    seed, so the comparison is paired.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=9, n_ctx=8, d_model=16, n_heads=2, d_mlp=32), seed=0)
        >>> v = {"const": torch.ones(16)}
        >>> r = coefficient_sweep(m, "blocks.0.hook_resid_pre", v, [0.0, 4.0], torch.tensor([1, 2]),
        ...                       lambda toks: bool((toks == 5).any()), torch.randint(9, (4, 8)), n_samples=4,
        ...                       max_new_tokens=3, quiet=True)
        >>> [row[0] for row in r["const"]], all(0 <= row[1] <= 1 for row in r["const"])
        ([0.0, 4.0], True)
    """
    from interplab.tasks.lm import next_token_ce

    out: dict[str, list[list[float]]] = {}
    jobs = [(name, c) for name in vectors for c in coefs]
    for name, c in tqdm(jobs, disable=quiet, desc="steering", unit="run"):
        hook = steering_hook(hook_name, vectors[name], float(c), start)
        conts = sample_continuations(model, prompt, n_samples, max_new_tokens, [hook], temperature, seed)
        p = sum(bool(predicate(row)) for row in conts) / n_samples
        total, n = 0.0, 0
        for chunk in text.split(batch_size):
            logits = model.run_with_hooks(chunk, fwd_hooks=[hook])
            total += next_token_ce(logits, chunk).item() * len(chunk)
            n += len(chunk)
        out.setdefault(name, []).append([float(c), p, total / n])
    return out


def pareto_front(points: Sequence[Sequence[float]]) -> list[list[float]]:
    """The points ``[coef, p_success, loss]`` not dominated by another (higher or equal
    p_success at lower or equal loss, one of them strictly), sorted by loss.

    Example:
        >>> pareto_front([[1, 0.5, 2.0], [2, 0.4, 3.0], [3, 0.9, 4.0]])
        [[1, 0.5, 2.0], [3, 0.9, 4.0]]
    """
    front = [p for p in points if not any((q[1] >= p[1] and q[2] <= p[2]) and (q[1] > p[1] or q[2] < p[2])
                                          for q in points)]
    return sorted(front, key=lambda p: (p[2], -p[1]))


def pareto_plot(sweep: Mapping[str, Sequence[Sequence[float]]], clean_loss: float | None = None) -> Any:
    """A matplotlib figure: P(success) against spliced loss per method, points and Pareto frontier.

    Example:
        >>> fig = pareto_plot({"original": [[0, 0.1, 2.0], [4, 0.8, 2.5]], "single": [[4, 0.5, 2.2]]})
        >>> len(fig.axes[0].lines)
        2
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n, (name, pts) in enumerate(sweep.items()):
        color = f"C{n}"
        ax.scatter([p[2] for p in pts], [p[1] for p in pts], color=color, alpha=0.45, s=18)
        front = pareto_front(pts)
        ax.plot([p[2] for p in front], [p[1] for p in front], "-o", color=color, label=name, ms=4)
    if clean_loss is not None:
        ax.axvline(clean_loss, color="grey", ls=":", lw=1)
    ax.set_xlabel("next-token loss on ordinary text (steered)")
    ax.set_ylabel("P(success) of sampled continuations")
    ax.legend(fontsize=8)
    return fig


__all__ = ["end_aligned_acts", "steering_vector", "steering_hook", "sample_continuations", "sae_views", "coefficient_sweep",
           "pareto_front", "pareto_plot"]
