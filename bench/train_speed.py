"""Epochs per second of our EIS VII challenge 2 training against a generic implementation.

The baseline is a straightforward PyTorch transformer, written the way a generic library
does it: ``nn.Linear`` projections, attention and MLP at every position, unembedding at
every position, and the loss taken at the last one. Ours is ``interplab``'s ``Transformer``
trained through ``Task.loss`` (the exact per-epoch work of ``interplab.train.train``), which
computes the last block only at the readout position. Both start from the same weights,
train full batch with the challenge optimizer (AdamW lr 5e-4, wd 1.0, betas (0.9, 0.98)) on
the same half of the pairs, in interleaved blocks so machine load affects both alike.

Run: ``python bench/train_speed.py [--epochs 40] [--block 5] [--threads N]``
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from interplab.models import Transformer
from interplab.tasks.pair_labels import challenge2_config, pair_label_task


class GenericTransformer(nn.Module):
    """A plain 1-layer attention + MLP transformer (no LayerNorm) computing every position."""

    def __init__(self, d_vocab: int, n_ctx: int, d_model: int, n_heads: int, d_mlp: int, d_out: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.embed = nn.Embedding(d_vocab, d_model)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.o = nn.Linear(d_model, d_model)
        self.fc_in, self.fc_out = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)
        self.unembed = nn.Linear(d_model, d_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, n = tokens.shape
        x = self.embed(tokens) + self.pos(torch.arange(n))
        split = lambda t: t.view(B, n, self.n_heads, self.d_head).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        z = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, n, -1)
        x = x + self.o(z)
        x = x + self.fc_out(F.relu(self.fc_in(x)))
        return self.unembed(x)

    @torch.no_grad()
    def copy_from(self, m: Transformer) -> None:
        """Take the weights of an interplab Transformer (TransformerLens layout)."""
        a, mlp = m.blocks[0].attn, m.blocks[0].mlp
        self.embed.weight.copy_(m.W_E)
        self.pos.weight.copy_(m.W_pos)
        for lin, W, b in ((self.q, a.W_Q, a.b_Q), (self.k, a.W_K, a.b_K), (self.v, a.W_V, a.b_V)):
            lin.weight.copy_(W.permute(0, 2, 1).reshape(-1, W.shape[1]))  # [H*Dh, D]
            lin.bias.copy_(b.reshape(-1))
        self.o.weight.copy_(a.W_O.reshape(-1, a.W_O.shape[-1]).T)
        self.o.bias.copy_(a.b_O)
        self.fc_in.weight.copy_(mlp.W_in.T)
        self.fc_in.bias.copy_(mlp.b_in)
        self.fc_out.weight.copy_(mlp.W_out.T)
        self.fc_out.bias.copy_(mlp.b_out)
        self.unembed.weight.copy_(m.W_U.T)
        self.unembed.bias.copy_(m.b_U)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="timed epochs per implementation")
    parser.add_argument("--block", type=int, default=5, help="epochs per interleaved block")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = pair_label_task(seed=0)
    cfg = challenge2_config()
    ours = Transformer(cfg, seed=0)
    generic = GenericTransformer(cfg.d_vocab, cfg.n_ctx, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.vocab_out)
    generic.copy_from(ours)
    x, y = task.split("train")
    idx = task.train_idx
    with torch.no_grad():
        init_diff = (ours(x, positions=[-1])[:, 0] - generic(x)[:, -1]).abs().max().item()

    def opt(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(m.parameters(), lr=5e-4, betas=(0.9, 0.98), weight_decay=1.0)

    runs = {
        "interplab (readout at last position)": (ours, opt(ours), lambda: task.loss(ours, idx)),
        "generic (every position)": (generic, opt(generic), lambda: F.cross_entropy(generic(x)[:, -1], y)),
    }
    elapsed = {name: 0.0 for name in runs}
    cpu = {name: 0.0 for name in runs}
    for name, (m, o, loss_fn) in runs.items():  # warm-up epoch, not timed
        o.zero_grad()
        loss_fn().backward()
        o.step()
    for _ in range(max(1, args.epochs // args.block)):
        for name, (m, o, loss_fn) in runs.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.block):
                o.zero_grad(set_to_none=True)
                loss_fn().backward()
                o.step()
            elapsed[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
    n_epochs = max(1, args.epochs // args.block) * args.block
    with torch.no_grad():
        final_diff = (ours(x, positions=[-1])[:, 0] - generic(x)[:, -1]).abs().max().item()
        scale = ours(x, positions=[-1]).abs().max().item()
    print(f"task: pair-labels ({task.extras['source']}), {len(idx)} training pairs, full batch, "
          f"{n_epochs} timed epochs each, torch threads {torch.get_num_threads()}")
    for name, t in elapsed.items():
        print(f"  {name:40s} {n_epochs / t:8.2f} epochs/s (wall)   {1000 * cpu[name] / n_epochs:8.1f} ms CPU/epoch")
    names = list(elapsed)
    print(f"speed-up (generic time / interplab time): {elapsed[names[1]] / elapsed[names[0]]:.2f}x wall, "
          f"{cpu[names[1]] / cpu[names[0]]:.2f}x CPU time")
    print(f"final-position logits, max |difference|: {init_diff:.2e} at init, {final_diff:.2e} after "
          f"{n_epochs + 1} identical training epochs (logit scale {scale:.2f})")


if __name__ == "__main__":
    main()
