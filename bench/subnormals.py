"""Epochs/s of the EIS VII challenge 2 training in its late phase, with and without flushing subnormals.

Late in training (train loss < 1e-4) gradients and Adam's moments fall below the smallest
normal float32 (1.2e-38); x86 CPUs handle such subnormal numbers on a slow path. This bench
starts from one late-phase checkpoint and continues the published training (AdamW lr 5e-4,
weight decay 1.0, full batch) for ``--epochs`` epochs twice per round, once with
``interplab.numerics(flush_denormal=True)`` and once with ``False``, in one process, and prints
epochs/s of each and the ratio. It also prints what flushing changes: the share of subnormal
values in Adam's moments at the start, and the largest difference of the weights and of the
train loss between the two continuations.

    python bench/subnormals.py --run runs/demo/run     # a challenge 2 run past loss 1e-4
    python bench/subnormals.py                          # trains one first (several minutes)

Baseline: the same continuation without flushing (the ratio is flushed / unflushed epochs/s).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from interplab.models import Transformer
from interplab.numerics import numerics
from interplab.runs import load_checkpoint, load_tensors, read_json, save_torch, state_path
from interplab.tasks import make_task
from interplab.tasks.pair_labels import challenge2_config, pair_label_task
from interplab.train import TrainConfig, train

LATE = 1e-4


def published(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=5e-4, weight_decay=1.0, betas=(0.9, 0.98), seed=0, log_every=10**9,
                       checkpoint_every=10**9, keep_history=False)


def late_run(run: str | None, tmp: Path) -> Path:
    """A run directory whose checkpoint is past train loss 1e-4 (trained here when ``run`` is None)."""
    if run is not None:
        return Path(run)
    out = tmp / "late"
    task = pair_label_task(labels="auto", seed=0)
    print("training challenge 2 until the train loss is below 1e-4 (flushed) ...")
    r = train(Transformer(challenge2_config(), seed=0), task, published(5000), out, quiet=False,
              stop=lambda row: row["train_loss"] < LATE)
    print(f"  reached train loss {r.final['train_loss']:.3g} at epoch {r.epochs_run}")
    return out


def subnormal_share(state: dict) -> float:
    tiny = torch.finfo(torch.float32).tiny
    n = sub = 0
    for s in state["optimizer"]["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            x = s[k]
            n += x.numel()
            sub += int(((x != 0) & (x.abs() < tiny)).sum())
    return sub / max(1, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="challenge 2 run directory with a late-phase checkpoints/state.pt")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (flushed, unflushed)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    src = late_run(args.run, tmp)
    config = read_json(src / "config.json")
    task = make_task(config["task"])
    state = load_checkpoint(state_path(src))
    start = int(state["epoch"])
    model = Transformer(challenge2_config(), seed=0)
    model.load_state_dict(state["model"])
    loss0 = task.evaluate(model.eval())["train_loss"]
    print(f"start: epoch {start}, train loss {loss0:.3g}, subnormal share of Adam's moments "
          f"{subnormal_share(state):.3%}, threads {torch.get_num_threads()}")
    if loss0 >= LATE:
        print(f"warning: train loss {loss0:.3g} is not below {LATE:g}; this is not the late phase")
    speed: dict[bool, list[float]] = {True: [], False: []}
    finals: dict[bool, tuple[dict[str, torch.Tensor], float]] = {}
    for _ in range(args.rounds):
        for flush in (True, False):
            out = tmp / f"run_{flush}"
            shutil.rmtree(out, ignore_errors=True)
            save_torch(state_path(out), {**state, "finished": False, "stopped_early": False})
            shutil.copy(src / "config.json", out / "config.json")
            m = Transformer(challenge2_config(), seed=0)
            cfg = published(start + args.epochs)
            with numerics(flush_denormal=flush):
                t0 = time.perf_counter()
                r = train(m, task, cfg, out, resume=True, quiet=True)
                dt = time.perf_counter() - t0
            speed[flush].append(args.epochs / dt)
            finals[flush] = (load_tensors(out / "model.safetensors"), r.final["train_loss"])
            print(f"  flush {'on ' if flush else 'off'}: {args.epochs / dt:.2f} epochs/s")
    on, off = max(speed[True]), max(speed[False])
    wdiff = max(float((finals[True][0][k] - finals[False][0][k]).abs().max()) for k in finals[True][0])
    print(f"epochs/s flushed {on:.2f}, unflushed {off:.2f} (best of {args.rounds}): ratio {on / off:.2f}x")
    print(f"after {args.epochs} epochs: train loss {finals[True][1]:.6g} flushed vs {finals[False][1]:.6g} unflushed, "
          f"largest weight difference {wdiff:.3g}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
