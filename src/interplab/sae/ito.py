"""Inference-time optimization: sparse codes from a dictionary alone, batched on tensors.

Keep an SAE's decoder, drop its encoder, and solve a sparse approximation problem per input:
find at most ``k`` coefficients ``c`` with ``x ~ c @ D`` where ``D [n_atoms, d]`` has unit-norm
rows. Every function takes a batch ``x [N, d]`` and returns codes ``[N, n_atoms]``.

- :func:`matching_pursuit`: greedy; pick the atom with the largest inner product with the
  residual, its coefficient is that inner product.
- :func:`orthogonal_matching_pursuit`: greedy selection, then least squares on the chosen set.
- :func:`gradient_pursuit`: greedy selection, then one gradient step on the chosen
  coefficients with the exact line-search step ``<c, r> / <c, c>`` (``c = g @ D``, ``g`` the
  gradient restricted to the chosen set); ``nonnegative=True`` clips coefficients at zero.

:func:`readout` reads an SAE out by its encoder, top-k, or one of these, at a given L0.
:func:`ito_loss_recovered` compares dictionaries on a language model: loss recovered (the
reconstruction spliced into the next-token loss) against target L0 for each pursuit, with a
random dictionary of the same shape (:func:`random_dictionary_like`) as the baseline.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> D = torch.randn(64, 16, generator=g); D = D / D.norm(dim=1, keepdim=True)
    >>> true = torch.zeros(4, 64); true[:, [3, 17, 40]] = torch.tensor([1.0, 2.0, 0.5])
    >>> x = true @ D
    >>> c = orthogonal_matching_pursuit(x, D, k=3)
    >>> sorted(c[0].nonzero().flatten().tolist()), round(float((c @ D - x).norm()), 4)
    ([3, 17, 40], 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from interplab.errors import check

READOUTS = ("encoder", "topk", "mp", "omp", "gp")


def _check(x: Tensor, D: Tensor, k: int) -> None:
    check(x.dim() == 2 and D.dim() == 2, f"x must be [N, d] and D [n_atoms, d], got {tuple(x.shape)} and {tuple(D.shape)}.")
    check(x.shape[1] == D.shape[1], f"x has width {x.shape[1]} but the dictionary atoms have width {D.shape[1]}.")
    check(1 <= k <= D.shape[0], f"k must be between 1 and the number of atoms ({D.shape[0]}), got {k}.")
    check(x.device == D.device, f"x is on {x.device} but the dictionary on {D.device}; move them to one device.")
    check(x.is_floating_point() and x.dtype == D.dtype, f"x ({x.dtype}) and the dictionary ({D.dtype}) must have "
          "the same floating-point dtype.")


def _select(corr: Tensor, nonnegative: bool) -> Tensor:
    return (corr if nonnegative else corr.abs()).argmax(dim=1)


def matching_pursuit(x: Tensor, D: Tensor, k: int, nonnegative: bool = True) -> Tensor:
    """Matching pursuit for ``k`` iterations (an atom may be chosen again, so L0 <= k).

    With ``nonnegative``, atoms are chosen by their largest positive inner product and an
    input whose residual has none left stops early.

    Example:
        >>> D = torch.eye(3)
        >>> matching_pursuit(torch.tensor([[3.0, -1.0, 2.0]]), D, k=2).tolist()
        [[3.0, 0.0, 2.0]]
    """
    _check(x, D, k)
    codes = torch.zeros(x.shape[0], D.shape[0], dtype=x.dtype, device=x.device)
    r = x.clone()
    rows = torch.arange(x.shape[0], device=x.device)
    for _ in range(k):
        corr = r @ D.T
        i = _select(corr, nonnegative)
        coef = corr[rows, i]
        if nonnegative:
            coef = coef.clamp_min(0)
        codes[rows, i] += coef
        r -= coef[:, None] * D[i]
    return codes


def orthogonal_matching_pursuit(x: Tensor, D: Tensor, k: int, nonnegative_selection: bool = False) -> Tensor:
    """Orthogonal matching pursuit: ``k`` distinct atoms, least-squares coefficients (signed).

    Selection is by largest absolute inner product (as scikit-learn), or largest positive one
    with ``nonnegative_selection``. The least-squares problems of the whole batch are solved
    together through their ``k x k`` Gram systems.

    Example: see the module docstring.
    """
    _check(x, D, k)
    N = x.shape[0]
    r = x.clone()
    idx = torch.empty(N, 0, dtype=torch.long, device=x.device)
    coef = torch.empty(N, 0, dtype=x.dtype, device=x.device)
    solve = torch.promote_types(x.dtype, torch.float32)  # linalg.solve has no bfloat16: solve in float32
    for _ in range(k):
        corr = r @ D.T
        corr.scatter_(1, idx, 0.0)  # never choose an atom twice
        idx = torch.cat([idx, _select(corr, nonnegative_selection)[:, None]], dim=1)
        Ds = D[idx]  # [N, t, d]
        gram = Ds @ Ds.transpose(1, 2)
        gram = gram.to(solve) + 1e-10 * torch.eye(gram.shape[-1], dtype=solve, device=x.device)  # atoms may coincide
        coef = torch.linalg.solve(gram, (Ds @ x[:, :, None]).to(solve))[..., 0].to(x.dtype)
        r = x - (coef[:, None, :] @ Ds)[:, 0]
    return torch.zeros(N, D.shape[0], dtype=x.dtype, device=x.device).scatter(1, idx, coef)


def gradient_pursuit(x: Tensor, D: Tensor, k: int, nonnegative: bool = True, conjugate: bool = False) -> Tensor:
    """Gradient pursuit: ``k`` selections, each followed by one exact line-search gradient step.

    The gradient of ``0.5 ||x - c D||^2`` with respect to ``c`` is ``-D r``; restricted to the
    chosen set it is ``g``; its image ``c_img = g @ D`` gives the exact step
    ``<c_img, r> / <c_img, c_img>``. ``nonnegative`` chooses by the largest positive inner
    product and clips coefficients at zero after each step.

    ``conjugate=True`` is approximate conjugate gradient pursuit (Blumensath & Davies 2008): each
    direction is made conjugate to the previous one (``d = g + b d_prev`` with
    ``b = -<c_img, c_prev> / <c_prev, c_prev>``), which brings the result much closer to OMP on
    coherent dictionaries at the same cost; a row whose coefficients get clipped restarts.

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> D = torch.randn(32, 8, generator=g); D = D / D.norm(dim=1, keepdim=True)
        >>> x = 2.0 * D[5:6] + 1.0 * D[9:10]
        >>> c = gradient_pursuit(x, D, k=4)
        >>> bool((c >= 0).all()), bool((c @ D - x).norm() < 0.5 * x.norm())
        (True, True)
    """
    _check(x, D, k)
    N = x.shape[0]
    # the chosen atoms as a growing list per row, so every step but the selection costs O(N k d)
    idx = torch.empty(N, 0, dtype=torch.long, device=x.device)
    valid = torch.empty(N, 0, dtype=torch.bool, device=x.device)  # False: a repeated choice, or an atom clipped to zero
    coef = x.new_empty(N, 0)
    Ds = x.new_empty(N, 0, D.shape[1])
    prev_dir, prev_img = x.new_empty(N, 0), torch.zeros_like(x)
    r = x.clone()
    for _ in range(k):
        corr = r @ D.T
        new = _select(corr, nonnegative)
        fresh = ~((idx == new[:, None]) & valid).any(1)
        idx = torch.cat([idx, new[:, None]], 1)
        valid = torch.cat([valid, fresh[:, None]], 1)
        coef = torch.cat([coef, coef.new_zeros(N, 1)], 1)
        Ds = torch.cat([Ds, D[new][:, None]], 1)
        g = torch.where(valid, corr.gather(1, idx), 0.0)  # the gradient on the chosen set
        c_img = (g[:, None, :] @ Ds)[:, 0]
        if conjugate:
            prev_dir = torch.cat([prev_dir, prev_dir.new_zeros(N, 1)], 1)
            pp = (prev_img * prev_img).sum(1)
            b = torch.where(pp > 0, -(c_img * prev_img).sum(1) / pp.clamp_min(1e-30), 0.0)
            g, c_img = g + b[:, None] * prev_dir, c_img + b[:, None] * prev_img
        denom = (c_img * c_img).sum(1)
        step = torch.where(denom > 0, (c_img * r).sum(1) / denom.clamp_min(1e-30), 0.0)
        coef = coef + step[:, None] * g
        if conjugate:
            prev_dir, prev_img = g, c_img
        if nonnegative:
            clipped = (coef < 0).any(1)
            coef = coef.clamp_min(0)
            valid &= coef > 0  # an atom clipped to zero may be chosen again later
            if conjugate:  # conjugacy no longer holds after clipping: restart those rows
                prev_dir = torch.where(clipped[:, None], 0.0, prev_dir)
                prev_img = torch.where(clipped[:, None], 0.0, prev_img)
        r = x - (coef[:, None, :] @ Ds)[:, 0]
    return x.new_zeros(N, D.shape[0]).scatter_add(1, idx, torch.where(valid, coef, 0.0))


@torch.no_grad()
def readout(sae: torch.nn.Module, x: Tensor, method: str = "encoder", k: int | None = None) -> tuple[Tensor, Tensor]:
    """Codes and reconstruction of ``x`` by an SAE read out with ``method`` at L0 ``k``.

    ``encoder``: the trained encoder (``k`` ignored); ``topk``: the encoder's ``k`` largest;
    ``mp``, ``omp``, ``gp``: inference-time optimization on ``x - b_dec`` with the decoder
    (``mp`` and ``gp`` nonnegative). Reconstruction is ``codes @ W_dec + b_dec``.

    Example:
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=16))
        >>> codes, x_hat = readout(sae, torch.randn(3, 8), "gp", k=2)
        >>> codes.shape, bool(((codes != 0).sum(-1) <= 2).all())
        (torch.Size([3, 16]), True)
    """
    check(method in READOUTS, f"readout method must be one of {', '.join(READOUTS)}, got {method!r}.")
    check(method == "encoder" or k is not None, f"readout {method} needs k, the number of active features.")
    x = x.to(sae.W_dec)  # the SAE's device and dtype
    if method in ("encoder", "topk"):
        codes = sae.encode(x, k if method == "topk" else None)
    else:
        D, centered = sae.W_dec.detach(), x - sae.b_dec.detach()
        assert k is not None
        if method == "mp":
            codes = matching_pursuit(centered, D, k)
        elif method == "omp":
            codes = orthogonal_matching_pursuit(centered, D, k)
        else:
            codes = gradient_pursuit(centered, D, k)
    return codes, codes @ sae.W_dec.detach() + sae.b_dec.detach()


def equal_l0_readouts(sae: torch.nn.Module, x: Tensor, score: Callable[[Callable[[Tensor], Tensor]], float],
                      k: int | None = None, methods: Sequence[str] = READOUTS) -> tuple[int, dict[str, list[float]]]:
    """One dictionary read out by each method at equal L0, each reconstruction scored.

    ``x [N, d_in]``: the SAE's input rows. ``k`` defaults to the encoder's L0 on ``x``,
    rounded (at least 1); every method but ``encoder`` is read out at that L0 (see
    :func:`readout`). ``score`` receives a reconstruction function ``[M, d_in] -> [M, d_in]``
    (e.g. to splice into a model's loss) and returns one number. Returns
    ``(k, {method: [L0 on x, score]})``. Inference-time optimization comparison after
    Smith 2024, "Replacing SAE Encoders with Inference-Time Optimisation" (LessWrong).

    Raises :class:`~interplab.errors.InterplabError` for an unknown method.

    Example:
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=16), seed=0)
        >>> x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
        >>> k, rows = equal_l0_readouts(sae, x, lambda fn: float((fn(x) - x).pow(2).mean()), k=2, methods=("mp", "gp"))
        >>> k, sorted(rows), [rows[m][0] <= 2 for m in rows]
        (2, ['gp', 'mp'], [True, True])
    """
    from interplab.sae.metrics import l0

    if k is None:
        k = max(1, int(round(l0(sae.encode(x).detach()))))
    out: dict[str, list[float]] = {}
    for method in methods:
        kk = None if method == "encoder" else k
        codes, _ = readout(sae, x, method, kk)
        out[method] = [l0(codes), score(lambda a, m=method, kk=kk: readout(sae, a, m, kk)[1])]
    return k, out


def random_dictionary_like(sae: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of ``sae`` whose decoder rows are random unit vectors (same shape, ``b_dec`` and
    scale kept): the baseline dictionary for inference-time optimization.

    Example:
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> r = random_dictionary_like(SAE(SAEConfig(d_in=4, d_sae=6)), seed=1)
        >>> r.W_dec.shape, [round(n, 4) for n in r.W_dec.detach().norm(dim=1).tolist()][:2]
        (torch.Size([6, 4]), [1.0, 1.0])
    """
    import copy

    out = copy.deepcopy(sae)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(tuple(out.W_dec.shape), generator=g)
    with torch.no_grad():
        out.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
        out.W_enc.copy_(out.W_dec.T)
    return out


@torch.no_grad()
def ito_loss_recovered(model: torch.nn.Module, tokens: Tensor, sae: torch.nn.Module, ks: list[int],
                       methods: tuple[str, ...] = ("mp", "omp", "gp"), random_baseline: bool = True, seed: int = 0,
                       batch_size: int = 16, quiet: bool = True) -> dict[str, dict[str, list[list[float]]]]:
    """Loss recovered on a language model against target L0, per dictionary and pursuit.

    For each dictionary (``sae``, and with ``random_baseline`` a random one of the same shape)
    and each method in ``methods`` (any :data:`READOUTS` but ``encoder``) and L0 ``k`` in
    ``ks``: the SAE's site rows (all tokens but BOS) are read out at L0 ``k`` and the
    reconstruction is spliced into the next-token loss on ``tokens [N, T]``. Returns
    ``{"sae"|"random": {method: [[k, recovered_zero, recovered_mean, loss], ...]}}``.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=5, d_model=8, n_heads=2, d_mlp=16), seed=0)
        >>> sae = SAE(SAEConfig(d_in=8, d_sae=16, hook_name="blocks.0.hook_resid_post"))
        >>> r = ito_loss_recovered(m, torch.randint(6, (4, 5)), sae, [1, 8], methods=("omp",))
        >>> sorted(r), [row[0] for row in r["sae"]["omp"]]
        (['random', 'sae'], [1.0, 8.0])
    """
    from tqdm.auto import tqdm

    from interplab.sae.metrics import lm_loss_recovered, spliced_loss
    from interplab.tasks.lm import next_token_ce
    from interplab.sae.store import TokenSite

    check(all(m in READOUTS and m != "encoder" for m in methods), f"methods must be among {', '.join(READOUTS[1:])}.")
    site = TokenSite(sae.cfg.hook_name)
    base = lm_loss_recovered(model, tokens, sae, site, reconstruct=lambda a: a, batch_size=batch_size)
    dicts = {"sae": sae, **({"random": random_dictionary_like(sae, seed)} if random_baseline else {})}
    out: dict[str, dict[str, list[list[float]]]] = {}
    jobs = [(name, m, k) for name in dicts for m in methods for k in ks]
    for name, method, k in tqdm(jobs, disable=quiet, desc="ito", unit="run"):
        d = dicts[name]
        s = d.cfg.act_scale

        def recon(a: Tensor, d: torch.nn.Module = d, method: str = method, k: int = k, s: float = s) -> Tensor:
            return readout(d, a * s, method, k)[1] / s

        loss = spliced_loss(model, tokens, tokens, site, recon, next_token_ce, batch_size)
        frac = [(base[a] - loss) / (base[a] - base["clean"]) if abs(base[a] - base["clean"]) > 1e-12 else float("nan")
                for a in ("zero", "mean")]
        out.setdefault(name, {}).setdefault(method, []).append([float(k), frac[0], frac[1], loss])
    return out
