"""Training K toy models as instances of one model vs as K separate models, same steps each.

For each training setting of the TMS study, times one K-instance model and a sample of
separate one-instance models (same objective, batch size and number of steps), all through
``interplab.train.train`` in this one process, and prints the cost per instance of each and
their ratio, in wall-clock and CPU time. Separate runs all cost the same, so timing a sample
of them gives their cost per instance without running all K.

    python bench/tms_instances.py [--steps 200]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from interplab.models import TMSConfig, ToyModelOfSuperposition
from interplab.tasks.superposition import SparseFeatures
from interplab.train import TrainConfig, train

# name, instances K, features n, hidden m, batch, sparsity, separate runs timed
SETTINGS = [
    ("phase diagram (n=2, m=1)", 2400, 2, 1, 128, 0.9, 20),
    ("five features (n=5, m=2)", 40, 5, 2, 1024, 0.9, 40),
    ("finite data (n=20, m=2)", 10, 20, 2, 1024, 0.9, 10),
    ("dimensionality (n=200, m=20)", 20, 200, 20, 256, 0.7, 5),
]


def fit(n_instances: int, n: int, m: int, batch: int, sparsity: float, steps: int, seed: int) -> None:
    obj = SparseFeatures(n_instances, n, sparsity=sparsity, steps_per_epoch=steps, eval_batch=64, seed=seed)
    model = ToyModelOfSuperposition(TMSConfig(n_instances, n, m), seed=seed)
    cfg = TrainConfig(epochs=1, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), batch_size=batch, seed=seed)
    train(model, obj, cfg, quiet=True)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    steps = ap.parse_args().steps
    fit(2, 5, 2, 64, 0.5, 10, seed=99)  # warm-up: first-call allocations
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {steps} steps per model")
    print(f"{'setting':30s} {'K':>5s} {'batch':>5s}  {'together ms/inst':>16s}  {'separate ms/inst':>16s}  "
          f"{'ratio wall':>10s}  {'ratio cpu':>9s}")
    for name, K, n, m, batch, S, k in SETTINGS:
        together = timed(lambda: fit(K, n, m, batch, S, steps, seed=0))
        separate = timed(lambda: [fit(1, n, m, batch, S, steps, seed=s) for s in range(k)])
        per_t = [t / K for t in together]
        per_s = [t / k for t in separate]
        print(f"{name:30s} {K:5d} {batch:5d}  {1e3 * per_t[0]:16.2f}  {1e3 * per_s[0]:16.2f}  "
              f"{per_s[0] / per_t[0]:9.1f}x  {per_s[1] / per_t[1]:8.1f}x")


if __name__ == "__main__":
    main()
