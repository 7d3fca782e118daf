"""The speed cost of deterministic algorithms in the EIS VII challenge 2 training, and what it buys.

Trains the challenge 2 model (published optimizer, full batch, seed 0) for ``--epochs``
epochs with ``interplab.numerics(deterministic=True)`` and with ``False``, alternating, in one
process, at ``--threads`` threads (default: torch's default, all cores). Prints epochs/s of
each, the ratio (deterministic / non-deterministic epochs/s; the baseline is the
non-deterministic run), and the largest weight difference between the two runs of each kind
(0 means bitwise equal).

    python bench/determinism.py [--epochs 30] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from interplab.models import Transformer
from interplab.numerics import numerics
from interplab.tasks.pair_labels import challenge2_config, pair_label_task
from interplab.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = pair_label_task(labels="auto", seed=0)
    cfg = TrainConfig(epochs=args.epochs, lr=5e-4, weight_decay=1.0, betas=(0.9, 0.98), seed=0,
                      log_every=10**9)
    speed: dict[bool, list[float]] = {True: [], False: []}
    weights: dict[bool, list[dict[str, torch.Tensor]]] = {True: [], False: []}
    print(f"threads {torch.get_num_threads()}, {args.epochs} epochs per run")
    for _ in range(args.rounds):
        for det in (True, False):
            model = Transformer(challenge2_config(), seed=0)
            with numerics(deterministic=det):
                t0 = time.perf_counter()
                train(model, task, cfg, quiet=True)
                dt = time.perf_counter() - t0
            speed[det].append(args.epochs / dt)
            weights[det].append({k: v.clone() for k, v in model.state_dict().items()})
            print(f"  deterministic {'on ' if det else 'off'}: {args.epochs / dt:.2f} epochs/s")

    def spread(ws: list[dict[str, torch.Tensor]]) -> float:
        return max(float((w[k] - ws[0][k]).abs().max()) for w in ws[1:] for k in w) if len(ws) > 1 else float("nan")

    on, off = max(speed[True]), max(speed[False])
    print(f"epochs/s deterministic {on:.2f}, non-deterministic {off:.2f} (best of {args.rounds}): "
          f"ratio {on / off:.2f}x (cost {100 * (1 - on / off):.1f}%)")
    print(f"largest weight difference between runs: deterministic {spread(weights[True]):.3g}, "
          f"non-deterministic {spread(weights[False]):.3g}")


if __name__ == "__main__":
    main()
