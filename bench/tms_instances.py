"""Training K toy models as instances of one model vs K separate models, same steps each.

Runs both through ``interplab.train.train`` in one process and prints the per-instance cost of
each and their ratio (wall clock and CPU time). Setting: the study's five features in two
dimensions (importance 0.9^i, sparsity 0.9), batch 1024, 300 steps per model.

    python bench/tms_instances.py [--instances 40] [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import torch

from interplab.models import TMSConfig, ToyModelOfSuperposition
from interplab.tasks.superposition import SparseFeatures
from interplab.train import TrainConfig, train


def fit(n_instances: int, steps: int, seed: int) -> None:
    obj = SparseFeatures(n_instances, 5, sparsity=0.9, importance=[0.9**i for i in range(5)],
                         steps_per_epoch=100, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(n_instances, 5, 2), seed=seed)
    cfg = TrainConfig(epochs=steps // 100, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), batch_size=1024,
                      schedule="cosine", seed=seed, log_every=10**6)
    train(model, obj, cfg, quiet=True)


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=40)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    K, steps = args.instances, args.steps
    fit(2, 100, seed=99)  # warm-up: imports, first-call allocations
    together = timed(lambda: fit(K, steps, seed=0))
    separate = timed(lambda: [fit(1, steps, seed=k) for k in range(K)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; K={K} instances, {steps} steps each, "
          "n=5 features, m=2, batch 1024")
    for name, i in (("wall", 0), ("cpu", 1)):
        a, b = together[i] / K, separate[i] / K
        print(f"{name:4s}: one {K}-instance model {together[i]:.2f} s ({1e3 * a:.1f} ms per instance); "
              f"{K} separate models {separate[i]:.2f} s ({1e3 * b:.1f} ms per instance); ratio {b / a:.1f}x")


if __name__ == "__main__":
    main()
