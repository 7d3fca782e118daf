"""Overhead of interplab.instrument.trace against run_with_hooks (same sites, same run).

For each model: the plain forward pass, ``run_with_hooks`` with an identity hook on every
site, and a ``trace`` loop that visits every site and does nothing. Prints the time per
forward pass of each, the ratio trace / run_with_hooks, and the overhead per site in
microseconds. Times are CPU time of this process (``time.process_time``), which on a shared
machine measures the work rather than the waiting; the three are also measured interleaved,
round by round, so that load affects all of them alike; the median round is reported.

Run: ``python bench/trace.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interplab.instrument import trace
from interplab.models import MLP, ConvNet, ConvNetConfig, MLPConfig, Transformer, TransformerConfig


def _cases():
    g = torch.Generator().manual_seed(0)
    tiny = Transformer(TransformerConfig(d_vocab=114, n_ctx=3, d_model=128, n_heads=4, d_mlp=512, bias=False))
    two = Transformer(TransformerConfig(d_vocab=21, n_ctx=17, d_model=64, n_layers=2, n_heads=4, d_mlp=None,
                                        normalization="LN"))
    return [
        ("grokking transformer, batch 1", tiny, (torch.tensor([[1, 2, 113]]),)),
        ("grokking transformer, batch 1024", tiny, (torch.randint(0, 113, (1024, 3), generator=g),)),
        ("2-layer attn-only LN, batch 64", two, (torch.randint(0, 21, (64, 17), generator=g),)),
        ("MLP 2x256, batch 64", MLP(MLPConfig(d_in=64, d_hidden=(256, 256), d_out=10)),
         (torch.randn(64, 64, generator=g),)),
        ("challenge CNN, batch 16", ConvNet(ConvNetConfig()), (torch.rand(16, 28, 28, generator=g),)),
    ]


def _time(fn, reps: int) -> float:
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU time, median of {args.rounds} "
          f"interleaved rounds of {args.reps} passes")
    print(f"{'model':36s} {'sites':>5s} {'plain ms':>9s} {'hooks ms':>9s} {'trace ms':>9s} {'trace/hooks':>11s} "
          f"{'us/site':>8s}")
    for name, model, inputs in _cases():
        sites = list(model.hook_dict)

        def plain():
            model(*inputs)

        def hooks():
            model.run_with_hooks(*inputs, fwd_hooks=[(s, lambda a, hook: a) for s in sites])

        def traced():
            for _site in trace(model, *inputs):
                pass

        with torch.no_grad():
            for fn in (plain, hooks, traced):
                fn()
            rounds = [[_time(fn, args.reps) for fn in (plain, hooks, traced)] for _ in range(args.rounds)]
        p, h, t = (statistics.median(r[i] for r in rounds) for i in range(3))
        n = len(sites)
        per_site = statistics.median((r[2] - r[1]) / n for r in rounds) * 1e6
        print(f"{name:36s} {n:5d} {p * 1e3:9.3f} {h * 1e3:9.3f} {t * 1e3:9.3f} {t / h:11.2f} {per_site:8.1f}")


if __name__ == "__main__":
    main()
