"""Epochs/s of a training run's late phase (EIS VII challenge 2, grokking), with and without flushing subnormals.

Late in training x86 CPUs may meet subnormal floats (nonzero, below 1.2e-38 in float32) and
handle them on a slow path. This bench takes one saved training state of a run (the
EIS VII challenge 2 published protocol: AdamW lr 5e-4, weight decay 1.0, full batch; or any run
trained by ``interplab.train``, e.g. a grokking run), first counts where subnormals are at
that state (weights, their gradients, Adam's exp_avg and exp_avg_sq, every activation site and
its gradient, the output probabilities and d loss / d logits), then continues the training for
``--epochs`` epochs from that same state with ``numerics(flush_denormal=True)`` and with
``False`` (the run's stored training settings), alternating, ``--rounds`` times, in one process, and prints epochs/s of each, the
ratio, and the largest weight and loss difference between the two continuations.

    python bench/late_run.py --out runs/eis-full        # the --full run, snapshots every 250 epochs
    python bench/subnormals.py --run runs/eis-full/run --state runs/eis-full/snapshots/state_002500.pt
    python bench/subnormals.py --run runs/eis-full/run --count-only --state S1 --state S2 ...
    python bench/late_run.py --from-run runs/grokking --out runs/grok-late --until 1600
    python bench/subnormals.py --run runs/grok-late/run --state runs/grok-late/snapshots/state_001600.pt

Baseline: the same continuation without flushing (the ratio is flushed / unflushed epochs/s). The ratio
is whatever this machine gives: the counts say how many subnormal numbers there were to flush.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from interplab.instrument import trace
from interplab.models import model_from_config_dict
from interplab.numerics import count_subnormal, numerics
from interplab.runs import load_checkpoint, load_tensors, read_json, save_torch, state_path
from interplab.tasks import make_task
from interplab.train import TrainConfig, train


def stored_training(config: dict[str, Any], epochs: int) -> TrainConfig:
    """The run's own training settings, continued to ``epochs``, without logging, checkpoints or stopping."""
    t = {k: tuple(v) if k == "betas" else v for k, v in config["train"].items()}
    t.update(epochs=epochs, log_every=10**9, checkpoint_every=10**9, keep_history=False, patience=None, stop_loss=None)
    return TrainConfig(**t)


def census(model: torch.nn.Module, task: Any, state: dict[str, Any]) -> tuple[dict[str, tuple[int, int]], dict[str, float]]:
    """(subnormal count, size) of every tensor one full-batch training step touches, at ``state``.

    Computed without flushing (a flushed pass would turn them into zeros before they are counted).
    """
    out: dict[str, tuple[int, int]] = {}

    def add(key: str, x: torch.Tensor) -> None:
        c, n = out.get(key, (0, 0))
        out[key] = (c + count_subnormal(x.detach()), n + x.numel())

    model.load_state_dict(state["model"])
    model.train()
    for s in state["optimizer"]["state"].values():
        add("adam exp_avg", s["exp_avg"])
        add("adam exp_avg_sq", s["exp_avg_sq"])
    with numerics(flush_denormal=False), torch.enable_grad():
        model.zero_grad(set_to_none=True)
        idx = task.train_idx
        tr = trace(model, task.inputs[idx])
        sites = []
        for site in tr:
            if site.value.requires_grad:
                site.value.retain_grad()
            sites.append((site.name, site.value))
        logits = tr.output[:, -1].float()  # both tasks read the last position
        logits.retain_grad()
        labels = task.labels[idx]
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        probs = logits.detach().softmax(-1)
    for p in model.parameters():
        add("weights", p)
        if p.grad is not None:
            add("weight gradients", p.grad)
    for name, v in sites:
        add(f"act {name}", v)
        if v.grad is not None:
            add(f"grad {name}", v.grad)
    add("output probabilities", probs)
    add("d loss / d logits", logits.grad)
    lp = logits.detach().log_softmax(-1)
    lp[torch.arange(len(idx)), labels] = -torch.inf
    other = lp.logsumexp(-1)  # log p of the wrong classes together, per training example
    info = {"loss": loss.item(), "wrong_logp_min": float(other.min()), "wrong_logp_median": float(other.median()),
            "wrong_logp_subnormal": float((other < -87.3).double().mean())}
    return out, info


def print_census(c: dict[str, tuple[int, int]], info: dict[str, float]) -> None:
    for key, (a, b) in c.items():
        if a:
            print(f"    {key:42s} {a:10d} of {b:10d} ({a / b:.3%})")
    print(f"    total subnormal entries {sum(a for a, _ in c.values())}; log p of the wrong classes over the training "
          f"examples: min {info['wrong_logp_min']:.1f}, median {info['wrong_logp_median']:.1f}, below -87.3 (exp "
          f"underflows to a float32 subnormal) for {info['wrong_logp_subnormal']:.1%}")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def micro() -> dict[str, tuple[float, float]]:
    """CPU seconds (best of 5) of kernels the training runs, on operands made subnormal, flushed vs not:
    whether this CPU has a subnormal penalty at all."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 1024, generator=g), torch.randn(1024, 512, generator=g)
    sub = a * 1e-39  # every nonzero entry subnormal
    small_a, small_b = a * 1e-20, b * 1e-20  # normal operands whose products are subnormal
    kernels = {"matmul, normal operands": lambda: a @ b, "matmul, subnormal operand": lambda: sub @ b,
               "matmul, subnormal products": lambda: small_a @ small_b,
               "multiply, subnormal operand": lambda: sub * 1.0001, "add, subnormal operands": lambda: sub + sub}
    out: dict[str, list[float]] = {k: [] for k in kernels}
    for flush in (True, False):
        with numerics(flush_denormal=flush):
            for k, f in kernels.items():
                f()
                best = float("inf")
                for _ in range(5):
                    t0 = time.process_time()
                    f()
                    best = min(best, time.process_time() - t0)
                out[k].append(best)
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="challenge 2 run directory (its config.json names the task)")
    ap.add_argument("--state", action="append", default=None,
                    help="training state to start from (default: the run's checkpoints/state.pt); repeat with "
                         "--count-only to count at several states")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (flushed, unflushed)")
    ap.add_argument("--count-only", action="store_true", help="only count subnormals, no timing")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}")
    if not args.count_only:
        print("kernels on subnormal operands, CPU ms flushed / unflushed (best of 5):")
        for k, (on, off) in micro().items():
            print(f"    {k:30s} {on * 1e3:7.2f} / {off * 1e3:7.2f}  ({off / on:.2f}x)")
    src = Path(args.run)
    config = read_json(src / "config.json")
    task = make_task(config["task"])
    states = args.state or [str(state_path(src))]
    model = model_from_config_dict(config["model"])
    for path in states:
        state = load_checkpoint(Path(path))
        c, info = census(model, task, state)
        print(f"state {path}: epoch {int(state['epoch'])}, train loss {info['loss']:.3g}, "
              f"threads {torch.get_num_threads()}; subnormal entries (counted unflushed):")
        print_census(c, info)
    if args.count_only:
        return
    state = load_checkpoint(Path(states[-1]))
    start = int(state["epoch"])
    tmp = Path(tempfile.mkdtemp())
    speed: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # epochs per CPU second: steadier on a shared machine
    finals: dict[bool, tuple[dict[str, torch.Tensor], float]] = {}
    for _ in range(args.rounds):
        for flush in (True, False):
            out = tmp / f"run_{flush}"
            shutil.rmtree(out, ignore_errors=True)
            save_torch(state_path(out), {**state, "finished": False, "stopped_early": False})
            shutil.copy(src / "config.json", out / "config.json")
            m = model_from_config_dict(config["model"])
            cfg = stored_training(config, start + args.epochs)
            with numerics(flush_denormal=flush):
                t0, c0 = time.perf_counter(), time.process_time()
                r = train(m, task, cfg, out, resume=True, quiet=True)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            speed[flush].append(args.epochs / dt)
            cpu[flush].append(args.epochs / dc)
            finals[flush] = (load_tensors(out / "model.safetensors"), r.final["train_loss"])
            print(f"  flush {'on ' if flush else 'off'}: {args.epochs / dt:.2f} epochs/s, {args.epochs / dc:.2f} per CPU s")
    on, off = max(speed[True]), max(speed[False])
    wdiff = max(float((finals[True][0][k] - finals[False][0][k]).abs().max()) for k in finals[True][0])
    print(f"epochs {start}-{start + args.epochs}: epochs/s flushed {on:.2f}, unflushed {off:.2f} "
          f"(best of {args.rounds}): ratio {on / off:.2f}x; per CPU second {max(cpu[True]):.2f} vs "
          f"{max(cpu[False]):.2f}: ratio {max(cpu[True]) / max(cpu[False]):.2f}x")
    print(f"after {args.epochs} epochs: train loss {finals[True][1]:.6g} flushed vs {finals[False][1]:.6g} unflushed, "
          f"largest weight difference {wdiff:.3g}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
