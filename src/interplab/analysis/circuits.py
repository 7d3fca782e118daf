"""QK and OV circuits of attention heads, and composition scores between heads.

Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits". With TransformerLens'
row-vector convention (``x @ W``), head ``h`` of layer ``l`` has

- the QK circuit ``W_E W_Q^h (W_K^h)^T W_E^T`` ``[vocab, vocab]``: how much a query token attends to a key token;
- the OV circuit ``W_E W_V^h W_O^h W_U`` ``[vocab, vocab]``: what attending to a source token writes to each logit;

both ignoring LayerNorm, biases and positional embeddings, as in the paper. Composition
scores say how much a later head B reads what an earlier head A writes (``OV_A = W_V^A W_O^A``,
``QK_B = W_Q^B (W_K^B)^T``): Q-composition ``||OV_A QK_B||_F``, K-composition
``||QK_B OV_A^T||_F``, V-composition ``||OV_A OV_B||_F``, each divided by
``||OV_A||_F ||QK_B||_F`` (or ``||OV_A||_F ||OV_B||_F``). They are computed from the low-rank
factors (``d_head``-sized Gram matrices), exactly and cheaply for any model width.

Weights are read as ``model.blocks[l].attn.W_Q`` etc. (``[head, d_model, d_head]``), which both
interplab's Transformer and TransformerLens models provide.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=2, n_heads=2, d_mlp=None))
    >>> qk_circuit(m, 0, 1).shape, ov_circuit(m, 1, 0).shape
    (torch.Size([6, 6]), torch.Size([6, 6]))
    >>> s = composition_scores(m, "k")
    >>> s.shape, bool(s[1, :, 0, :].isnan().all()), bool((s[0, :, 1, :] > 0).all())
    (torch.Size([2, 2, 2, 2]), True, True)
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.errors import check

KINDS = ("q", "k", "v")


def _attn(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    n_layers = model.cfg.n_layers
    check(0 <= layer < n_layers, f"layer must be in 0..{n_layers - 1}, got {layer}.")
    return model.blocks[layer].attn


def head_weights(model: torch.nn.Module, layer: int) -> dict[str, Tensor]:
    """``W_Q, W_K, W_V`` ``[head, d_model, d_head]`` and ``W_O`` ``[head, d_head, d_model]`` of a layer.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_heads=2, d_mlp=None))
        >>> head_weights(m, 0)["W_O"].shape
        torch.Size([2, 4, 8])
    """
    a = _attn(model, layer)
    return {k: getattr(a, k).detach() for k in ("W_Q", "W_K", "W_V", "W_O")}


def _token_rows(W_E: Tensor, tokens: Tensor | None) -> Tensor:
    return W_E if tokens is None else W_E[tokens.to(W_E.device)]


@torch.no_grad()
def qk_circuit(model: torch.nn.Module, layer: int, head: int, queries: Tensor | None = None,
               keys: Tensor | None = None) -> Tensor:
    """``W_E W_Q W_K^T W_E^T`` for one head: ``[n_queries, n_keys]`` (all tokens unless given).

    Example: see the module docstring.
    """
    w = head_weights(model, layer)
    W_E = model.W_E.detach()
    q = _token_rows(W_E, queries) @ w["W_Q"][head]  # [n_q, d_head]
    k = _token_rows(W_E, keys) @ w["W_K"][head]  # [n_k, d_head]
    return q @ k.T


@torch.no_grad()
def ov_circuit(model: torch.nn.Module, layer: int, head: int, sources: Tensor | None = None) -> Tensor:
    """``W_E W_V W_O W_U`` for one head: ``[n_sources, vocab]`` (all source tokens unless given).

    Example: see the module docstring.
    """
    w = head_weights(model, layer)
    return _token_rows(model.W_E.detach(), sources) @ w["W_V"][head] @ w["W_O"][head] @ model.W_U.detach()


def _fro(L: Tensor, M: Tensor, R: Tensor) -> Tensor:
    """``||L M R^T||_F`` from ``L [D, a]``, ``M [a, b]``, ``R [D, b]`` via Gram matrices (batched)."""
    GL, GR = L.transpose(-1, -2) @ L, R.transpose(-1, -2) @ R
    return torch.einsum("...ab,...ac,...cd,...bd->...", M, GL, M, GR).clamp_min(0).sqrt()


@torch.no_grad()
def composition_scores(model: torch.nn.Module, kind: str) -> Tensor:
    """Composition scores ``[layer_A, head_A, layer_B, head_B]`` of kind ``q``, ``k`` or ``v``;
    NaN where B is not in a later layer than A.

    Example: see the module docstring.
    """
    check(kind in KINDS, f"kind must be one of q, k, v, got {kind!r}.")
    n_layers = model.cfg.n_layers
    ws = [{k: v.double() for k, v in head_weights(model, layer).items()} for layer in range(n_layers)]
    H = ws[0]["W_Q"].shape[0]
    out = torch.full((n_layers, H, n_layers, H), float("nan"), dtype=torch.float64, device=ws[0]["W_Q"].device)
    for la in range(n_layers):
        VA, OA = ws[la]["W_V"], ws[la]["W_O"]  # OV_A = VA @ OA: [H, D, Dh] @ [H, Dh, D]
        eye_a = torch.eye(VA.shape[-1], dtype=VA.dtype, device=VA.device).expand(H, -1, -1)
        norm_a = _fro(VA, eye_a, OA.transpose(-1, -2))  # [H]
        for lb in range(la + 1, n_layers):
            QB, KB, VB, OB = ws[lb]["W_Q"], ws[lb]["W_K"], ws[lb]["W_V"], ws[lb]["W_O"]
            eye_b = torch.eye(QB.shape[-1], dtype=QB.dtype, device=QB.device).expand(H, -1, -1)
            a, b = (slice(None), None), (None, slice(None))  # broadcast A over dim 0, B over dim 1
            if kind == "q":  # VA (OA QB) KB^T
                num = _fro(VA[a], OA[a] @ QB[b], KB[b])
                norm_b = _fro(QB, eye_b, KB)
            elif kind == "k":  # QB (KB^T OA^T) VA^T
                num = _fro(QB[b], KB[b].transpose(-1, -2) @ OA[a].transpose(-1, -2), VA[a])
                norm_b = _fro(QB, eye_b, KB)
            else:  # VA (OA VB) OB
                num = _fro(VA[a], OA[a] @ VB[b], OB[b].transpose(-1, -2))
                norm_b = _fro(VB, eye_b, OB.transpose(-1, -2))
            out[la, :, lb, :] = num / (norm_a[:, None] * norm_b[None, :])
    return out.float()


__all__ = ["KINDS", "head_weights", "qk_circuit", "ov_circuit", "composition_scores"]
