"""A small decoder-only transformer with TransformerLens activation sites.

Any small shape: layers, width, heads, MLP width (``d_mlp=None`` gives an attention-only
model), ReLU / GELU / SoLU, no normalisation or LayerNorm, optional biases, learned
positional embeddings and an optional separate output vocabulary. Weights use the
TransformerLens layout (``W_Q[head, d_model, d_head]``, ``W_O[head, d_head, d_model]``, ...).

Fused kernels (``fused=True``): when nothing is hooked at a LayerNorm's ``hook_scale`` /
``hook_normalized`` or at an attention layer's ``hook_attn_scores`` / ``hook_pattern`` (beyond
``SHORT_CONTEXT`` positions), the forward pass uses ``F.layer_norm`` and
``F.scaled_dot_product_attention`` instead of materialising those sites: the same function up
to float rounding, and faster to train. Caching or patching a site switches that module back
to the explicit computation (so outputs with and without hooks agree to rounding, not bits).

Readout at selected positions: ``model(tokens, positions=[-1])`` returns logits only there.
The last block then computes queries, attention output, MLP and unembedding only at those
positions (keys and values still see every position), which gives the same numbers as
slicing the full output while skipping the work the loss does not need. Sites from
``blocks.{L-1}.hook_resid_mid`` onwards then have the restricted position axis.

Example:
    >>> import torch
    >>> cfg = TransformerConfig(d_vocab=114, n_ctx=3, d_model=32, n_heads=4, d_mlp=64)
    >>> model = Transformer(cfg, seed=0)
    >>> tokens = torch.tensor([[1, 2, 113], [5, 7, 113]])
    >>> full = model(tokens)
    >>> last = model(tokens, positions=[-1])
    >>> full.shape, last.shape
    (torch.Size([2, 3, 114]), torch.Size([2, 1, 114]))
    >>> torch.allclose(full[:, -1:], last, atol=1e-6)
    True
    >>> logits, cache = model.run_with_cache(tokens)
    >>> cache["blocks.0.attn.hook_pattern"].shape
    torch.Size([2, 4, 3, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from interplab.errors import check
from interplab.models.base import HookedModel, Positions, check_nonempty, readout_positions, register

ACTIVATIONS = ("relu", "gelu", "solu")
SHORT_CONTEXT = 8  # up to this many positions, attention uses broadcast products instead of batched matmuls
NORMALIZATIONS = ("none", "LN")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and options of a :class:`Transformer`.

    ``d_head`` defaults to ``d_model // n_heads``; ``d_mlp=None`` means attention-only;
    ``d_vocab_out`` defaults to ``d_vocab``; ``init_range`` is the std of the normal init
    (default ``0.8 / sqrt(d_model)``, as TransformerLens); ``fused``: fused LayerNorm and
    attention kernels where no hook reads them (see the module docstring).
    """

    d_vocab: int
    n_ctx: int
    d_model: int = 128
    n_layers: int = 1
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = 512
    act_fn: str = "relu"
    normalization: str = "none"
    bias: bool = True
    d_vocab_out: int | None = None
    init_range: float | None = None
    fused: bool = False

    def __post_init__(self) -> None:
        for name in ("d_vocab", "n_ctx", "d_model", "n_layers", "n_heads"):
            check(int(getattr(self, name)) >= 1, f"{name} must be at least 1, got {getattr(self, name)}.")
        check(self.act_fn in ACTIVATIONS, f"act_fn must be one of {', '.join(ACTIVATIONS)}, got {self.act_fn!r}.")
        check(
            self.normalization in NORMALIZATIONS,
            f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}.",
        )
        if self.d_head is None:
            check(
                self.d_model % self.n_heads == 0,
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) unless d_head is given.",
            )
        check(self.d_mlp is None or self.d_mlp >= 1, f"d_mlp must be at least 1 or None, got {self.d_mlp}.")

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def vocab_out(self) -> int:
        return self.d_vocab_out if self.d_vocab_out is not None else self.d_vocab

    @property
    def attn_only(self) -> bool:
        return self.d_mlp is None


def _hooked(*points: HookPoint) -> bool:
    """Whether any hook (forward or backward) is attached to one of ``points``."""
    return any(p._forward_hooks or p._forward_pre_hooks or p._backward_hooks or p._backward_pre_hooks
               for p in points)


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens sites ``hook_scale`` and ``hook_normalized``."""

    def __init__(self, d: int, eps: float = 1e-5, fused: bool = False) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and not _hooked(self.hook_scale, self.hook_normalized):
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


def _norm(cfg: TransformerConfig) -> nn.Module:
    return LayerNorm(cfg.d_model, fused=cfg.fused) if cfg.normalization == "LN" else nn.Identity()


class Attention(nn.Module):
    """Multi-head causal self-attention; queries may be restricted to some positions."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        H, D, Dh = cfg.n_heads, cfg.d_model, cfg.head_dim
        self.W_Q = nn.Parameter(torch.empty(H, D, Dh))
        self.W_K = nn.Parameter(torch.empty(H, D, Dh))
        self.W_V = nn.Parameter(torch.empty(H, D, Dh))
        self.W_O = nn.Parameter(torch.empty(H, Dh, D))
        if cfg.bias:
            self.b_Q = nn.Parameter(torch.zeros(H, Dh))
            self.b_K = nn.Parameter(torch.zeros(H, Dh))
            self.b_V = nn.Parameter(torch.zeros(H, Dh))
            self.b_O = nn.Parameter(torch.zeros(D))
        self.bias, self.fused = cfg.bias, cfg.fused
        self.scale = 1.0 / math.sqrt(Dh)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z = HookPoint()

    def _proj(self, x: Tensor, W: Tensor, b: str) -> Tensor:
        # [batch, pos, d_model] @ [head, d_model, d_head] -> [batch, pos, head, d_head], as one matmul
        H, D, Dh = W.shape
        out = (x @ W.transpose(0, 1).reshape(D, H * Dh)).unflatten(-1, (H, Dh))
        return out + getattr(self, b) if self.bias else out

    def forward(self, x: Tensor, q_pos: Tensor | None = None) -> Tensor:
        """``x``: [batch, pos, d_model]; ``q_pos``: query positions (None = all)."""
        n = x.shape[1]
        if q_pos is None:  # q, k, v from one matmul: [batch, pos, 3 * head * d_head]
            H, D, Dh = self.W_Q.shape
            W = torch.stack([self.W_Q, self.W_K, self.W_V]).permute(2, 0, 1, 3).reshape(D, 3 * H * Dh)  # [D, 3, H, Dh]
            b = torch.stack([self.b_Q, self.b_K, self.b_V]).flatten() if self.bias else None
            qkv = (x @ W if b is None else torch.addmm(b, x.flatten(0, 1), W).unflatten(0, x.shape[:2]))
            q, k, v = (t.unflatten(-1, (H, Dh)) for t in qkv.chunk(3, dim=-1))
            q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        else:
            q = self.hook_q(self._proj(x[:, q_pos], self.W_Q, "b_Q"))
            k = self.hook_k(self._proj(x, self.W_K, "b_K"))
            v = self.hook_v(self._proj(x, self.W_V, "b_V"))
        if self.fused and n > SHORT_CONTEXT and not _hooked(self.hook_attn_scores, self.hook_pattern):
            # fused attention on [batch, head, pos, d_head]; True in attn_mask = may attend
            mask = None if q_pos is None else torch.arange(n, device=x.device)[None, :] <= q_pos[:, None]
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=mask, is_causal=q_pos is None, scale=self.scale)
            z = self.hook_z(z.transpose(1, 2))
        else:
            if n <= SHORT_CONTEXT:  # broadcast products beat many tiny batched matmuls here
                scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1).permute(0, 3, 1, 2) * self.scale
            else:
                scores = torch.einsum("bqhk,bphk->bhqp", q, k) * self.scale
            qp = torch.arange(n, device=x.device) if q_pos is None else q_pos
            future = torch.arange(n, device=x.device)[None, :] > qp[:, None]  # [q, k]
            scores = self.hook_attn_scores(scores.masked_fill(future, float("-inf")))
            pattern = self.hook_pattern(scores.softmax(-1))
            if n <= SHORT_CONTEXT:
                z = (pattern.permute(0, 2, 3, 1).unsqueeze(-1) * v.unsqueeze(1)).sum(2)
            else:
                z = torch.einsum("bhqp,bphk->bqhk", pattern, v)
            z = self.hook_z(z)
        return F.linear(z.flatten(-2), self.W_O.flatten(0, 1).t(), self.b_O if self.bias else None)


class MLPBlock(nn.Module):
    """The MLP sublayer: ``W_out act(W_in x + b_in) + b_out`` with sites hook_pre/hook_post."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        assert cfg.d_mlp is not None
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        if cfg.bias:
            self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
            self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.bias = cfg.bias
        self.act_fn = cfg.act_fn
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()
        if cfg.act_fn == "solu":
            self.hook_mid = HookPoint()
            self.ln = LayerNorm(cfg.d_mlp)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(F.linear(x, self.W_in.t(), self.b_in if self.bias else None))
        if self.act_fn == "relu":
            post = F.relu(pre)
        elif self.act_fn == "gelu":
            post = F.gelu(pre)
        else:
            post = self.ln(self.hook_mid(pre * pre.softmax(-1)))
        return F.linear(self.hook_post(post), self.W_out.t(), self.b_out if self.bias else None)


class Block(nn.Module):
    """One residual block: attention, then (unless attention-only) an MLP."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = _norm(cfg)
        self.attn = Attention(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()
        self.attn_only = cfg.attn_only
        if not cfg.attn_only:
            self.ln2 = _norm(cfg)
            self.mlp = MLPBlock(cfg)
            self.hook_resid_mid = HookPoint()
            self.hook_mlp_out = HookPoint()

    def forward(self, resid: Tensor, q_pos: Tensor | None = None) -> Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid), q_pos))
        resid = (resid if q_pos is None else resid[:, q_pos]) + attn_out
        if self.attn_only:
            return self.hook_resid_post(resid)
        resid = self.hook_resid_mid(resid)
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


@register
class Transformer(HookedModel):
    """Decoder-only transformer; see the module docstring for an example."""

    config_class = TransformerConfig

    def __init__(self, cfg: TransformerConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = _norm(cfg)
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.vocab_out))
        if cfg.bias:
            self.b_U = nn.Parameter(torch.zeros(cfg.vocab_out))
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.init_weights()
        self.setup()

    def init_weights(self) -> None:
        """Normal init (std ``init_range``) of every matrix; biases zero; LayerNorm w=1."""
        std = self.cfg.init_range if self.cfg.init_range is not None else 0.8 / math.sqrt(self.cfg.d_model)
        g = self.init_generator()
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.split(".")[-1].startswith("W_"):
                    p.normal_(0.0, std, generator=g)

    def positions_index(self, positions: Positions, n: int) -> Tensor | None:
        """Readout positions as an index tensor (see :func:`~interplab.models.base.readout_positions`)."""
        idx = readout_positions(positions, n)
        return None if idx is None else idx.to(self.W_E.device)

    def forward(
        self,
        tokens: Tensor,
        positions: Positions = None,
        return_type: str = "logits",
    ) -> Tensor:
        """Logits ``[batch, pos, d_vocab_out]``, at ``positions`` only if given.

        ``return_type="resid"`` returns the final residual stream instead of logits.
        """
        check(tokens.dim() == 2, f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}.")
        check_nonempty(tokens, "tokens")
        check(not tokens.is_floating_point(), f"tokens must be integers, got dtype {tokens.dtype}.")
        n = tokens.shape[1]
        check(n <= self.cfg.n_ctx, f"sequence length {n} exceeds n_ctx {self.cfg.n_ctx}.")
        check(
            int(tokens.min()) >= 0 and int(tokens.max()) < self.cfg.d_vocab,
            f"tokens must lie in 0..{self.cfg.d_vocab - 1}.",
        )
        tokens = tokens.to(self.W_E.device)  # tokens may come from the CPU, whatever the model's device
        q_pos = self.positions_index(positions, n)
        resid = self.hook_embed(F.embedding(tokens.long(), self.W_E)) + self.hook_pos_embed(self.W_pos[:n])[None]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            resid = block(resid, q_pos if i == last else None)
        resid = self.ln_final(resid)
        if return_type == "resid":
            return resid
        return F.linear(resid, self.W_U.t(), self.b_U if self.cfg.bias else None)
