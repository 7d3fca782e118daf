"""Causal scrubbing of the challenge 1 CNN at fc1: the full network against its fc head.

The eis-cnn study scrubs and ablates at ``fc1.hook_post``. Run on the whole network, every
draw recomputes both convolutions for all inputs; run on :meth:`ConvNet.head` from cached
``hook_pool2`` activations, only fc1 and fc2 run. Both use the same engine
(:func:`interplab.interventions.scrub.scrub_many`) with the same hypothesis and seed, so they must give the
same agreement; the bench checks that and prints the wall-time ratio, measured in
interleaved rounds so machine load affects both alike.

Run: ``python bench/cnn_head_scrub.py [--data-dir D] [--rounds 3] [--draws 2]``
"""

from __future__ import annotations

import argparse
import time

import torch

from interplab import data
from interplab.instrument import site_values
from interplab.interventions.scrub import Group, Hypothesis, scrub_many
from interplab.models import ConvNet, pixels_to_input
from interplab.tasks.mnist import load_mnist

SITE = "fc1.hook_post"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--draws", type=int, default=2)
    args = ap.parse_args()
    net = ConvNet.from_file(data.data_file("eis-vii/mnist_model.pt", args.data_dir))
    x = pixels_to_input(load_mnist("test", args.data_dir)[0])
    acts = site_values(net, x, SITE)
    # a hypothesis of the study's shape: active units resampled within a coarse class of inputs
    key = (acts.sum(1) > acts.sum(1).median()).long()
    alive = (acts > 0).any(0).nonzero().reshape(-1).tolist()
    hyp = Hypothesis(SITE, groups=(Group(alive, "same", key=key),), name="bench")
    full_s, head_s = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        full = scrub_many(net, [hyp], x, n_draws=args.draws, seed=0)[0]
        full_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        pool2 = site_values(net, x, "hook_pool2")  # the cache is part of the head's cost
        head = scrub_many(net.head(), [hyp], pool2, n_draws=args.draws, seed=0)[0]
        head_s.append(time.perf_counter() - t)
        assert abs(full.agree - head.agree) < 1e-9, (full.agree, head.agree)
    f, h = min(full_s), min(head_s)
    print(f"scrubbing {len(x)} inputs, {args.draws} draws, best of {args.rounds} interleaved rounds")
    print(f"full network: {f:.2f} s   fc head from cached pool2: {h:.2f} s   speed-up {f / h:.1f}x "
          f"(same agreement {head.agree:.4f})")


if __name__ == "__main__":
    main()
