"""Training tokens/s of our small LM against a plain nanoGPT-style GPT of the same shape.

The baseline is written the way nanoGPT (karpathy/nanoGPT, ``model.py``) writes a GPT: one
fused ``c_attn`` linear for q, k, v, ``F.scaled_dot_product_attention(is_causal=True)``,
``nn.LayerNorm``, GELU MLP, learned positions, logits and loss at every position (the LM
head is untied, as in our ``Transformer``). Ours is ``interplab``'s ``Transformer`` (LayerNorm,
GELU, TransformerLens sites) trained through ``LMTask.loss`` on the same rows of the same
generated corpus, with the same AdamW settings, in interleaved blocks so that machine load
affects both alike. Prints each side's tokens/s and the ratio ours / baseline.

Run: ``python bench/lm_train_speed.py [--steps 30] [--block 5] [--d-model 128] [--n-layers 2]``
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from interplab.lm.corpus import make_corpus
from interplab.lm.tokens import tokenize_corpus
from interplab.models import Transformer
from interplab.tasks.lm import LMTask


class Block(nn.Module):
    def __init__(self, d: int, h: int, d_mlp: int) -> None:
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, d_mlp), nn.Linear(d_mlp, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))  # [B, h, T, d_head]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    """nanoGPT's GPT, reduced to what training needs."""

    def __init__(self, vocab: int, n_ctx: int, d: int, n_layers: int, h: int, d_mlp: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(Block(d, h, d_mlp) for _ in range(n_layers))
        self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per model (after warm-up)")
    ap.add_argument("--block", type=int, default=5, help="steps per interleaved block")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-ctx", type=int, default=64)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = tempfile.mkdtemp()
    make_corpus(d, n_bytes=300_000, n_people=50, quiet=True)
    tokenize_corpus(d, vocab_size=768, quiet=True)
    task = LMTask(d, n_ctx=args.n_ctx, seed=0)
    cfg = task.default_model_config(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads)
    ours = Transformer(cfg, seed=0)
    base = GPT(cfg.d_vocab, cfg.n_ctx, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_mlp)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
            for name, m in (("ours", ours), ("nanogpt", base))}
    g = torch.Generator().manual_seed(0)
    batches = [b for _, b in zip(range(args.steps + 2), task.batches(g, args.batch_size))]

    def step(name: str, batch: torch.Tensor) -> None:
        loss = task.loss(ours, batch) if name == "ours" else base(batch[:, :-1], batch[:, 1:])
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    for name in opts:  # warm-up
        for b in batches[:2]:
            step(name, b)
    times = {name: 0.0 for name in opts}
    work = batches[2:]
    for i in range(0, len(work), args.block):
        for name in opts:
            t = time.perf_counter()
            for b in work[i:i + args.block]:
                step(name, b)
            times[name] += time.perf_counter() - t
    n_tokens = sum(b[:, 1:].numel() for b in work)
    rate = {name: n_tokens / t for name, t in times.items()}
    print(f"shape: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, d_mlp {cfg.d_mlp}, "
          f"n_ctx {cfg.n_ctx}, vocab {cfg.d_vocab}, batch {args.batch_size}, threads {torch.get_num_threads()}")
    print(f"ours    {rate['ours']:9.0f} tokens/s")
    print(f"nanogpt {rate['nanogpt']:9.0f} tokens/s")
    print(f"ratio ours/nanogpt: {rate['ours'] / rate['nanogpt']:.2f}x  "
          f"({math.fsum(times.values()):.1f} s measured)")


if __name__ == "__main__":
    main()
