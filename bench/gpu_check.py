"""The GPU check, prepared for the next session that has a GPU: device tests and three measurements.

    python bench/gpu_check.py            # on a GPU machine: a few minutes
    python bench/gpu_check.py --small    # tiny sizes, runs anywhere (CPU included) to check the script

It prints, on CUDA when present (else MPS, else the CPU, saying so first):

0. the device-parametrised tests (``pytest tests/test_devices.py``), their pass/skip/fail counts;
1. (a) the EIS VII challenge 2 published protocol (``interplab train pair-labels``: 1-layer
   transformer, AdamW lr 5e-4, wd 1.0, 5000 full-batch epochs) through ``interplab.train.train``:
   wall time and final test accuracy;
2. (b) SAE training throughput (``train_sae``'s step, :func:`interplab.sae.train.sae_step`) at
   d_in 768, d_sae 24576, batch 4096, in float32, float32 with TF32, and under bfloat16 autocast,
   in rows/s and as a fraction of the dense matmul rate measured on the same device in the same
   dtype mode (a step is ``12 * batch * d_in * d_sae`` matmul FLOPs);
3. (c) inference-time optimisation: gradient pursuit against OMP, signals per second at the same
   dictionary, k = 32.

Every figure is printed with its unit; nothing is compared against numbers from another machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def matmul_rate(device: torch.device, n: int, dtype: torch.dtype, tf32: bool, repeat: int) -> float:
    """Dense matmul FLOP/s of an ``n x n x n`` product in ``dtype`` (TF32 allowed or not)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        return 2 * n**3 / timed(lambda: a @ b, device, repeat)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def run_device_tests() -> None:
    print("== device tests: pytest tests/test_devices.py", flush=True)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-rs", "tests/test_devices.py"],
                          cwd=ROOT, capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    shown = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "SKIPPED"))] + lines[-1:]
    print("\n".join("   " + ln for ln in shown))
    print(f"   exit code {proc.returncode}", flush=True)


def challenge2(device: torch.device, epochs: int) -> None:
    from interplab.models import Transformer
    from interplab.tasks.pair_labels import challenge2_config, pair_label_task
    from interplab.train import TrainConfig, train

    print(f"== (a) challenge 2 protocol: {epochs} full-batch epochs, AdamW lr 5e-4 wd 1.0, on {device}", flush=True)
    task = pair_label_task(seed=0)
    model = Transformer(challenge2_config(), seed=0).to(device)
    cfg = TrainConfig(epochs=epochs, lr=5e-4, weight_decay=1.0, log_every=max(1, epochs // 5), seed=0)
    sync(device)
    t = time.perf_counter()
    result = train(model, task, cfg, quiet=True)
    sync(device)
    wall = time.perf_counter() - t
    f = result.final
    print(f"   labels: {task.extras.get('source')}; {len(task.train_idx)} train / {len(task.test_idx)} test pairs")
    print(f"   wall time {wall:.1f} s ({epochs / wall:.1f} epochs/s); final train acc {f['train_acc']:.4f}, "
          f"test acc {f['test_acc']:.4f}", flush=True)


def sae_throughput(device: torch.device, d_in: int, d_sae: int, batch: int, repeat: int) -> None:
    from interplab.sae.model import SAE, SAEConfig
    from interplab.sae.train import sae_step

    print(f"== (b) SAE step (sae_step: loss, backward, decoder projection, Adam, renorm) d_in {d_in}, "
          f"d_sae {d_sae}, batch {batch}, on {device}", flush=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, d_in, generator=g).relu().to(device)
    flops = 12 * batch * d_in * d_sae
    n = 4096 if device.type == "cuda" else 1024
    modes = [("float32", torch.float32, False, False)]
    if device.type == "cuda":
        modes.append(("float32 + TF32", torch.float32, True, False))
    modes.append(("bfloat16 autocast", torch.bfloat16, device.type == "cuda", True))
    for name, mm_dtype, tf32, autocast in modes:
        sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae), seed=0).to(device)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4, betas=(0.0, 0.999))
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            step = timed(lambda: sae_step(sae, opt, x, 1e-3, autocast=autocast), device, repeat)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
        peak = matmul_rate(device, n, mm_dtype, tf32, repeat)
        print(f"   {name:18s} {1e3 * step:8.2f} ms/step  {batch / step:12.0f} rows/s  {flops / step / 1e12:7.2f} TFLOP/s"
              f" = {flops / step / peak:6.1%} of dense {name.split()[0]}{' TF32' if tf32 else ''} matmul "
              f"({peak / 1e12:.1f} TFLOP/s at {n}^3)", flush=True)
        del sae, opt


def pursuit(device: torch.device, d_in: int, d_sae: int, n: int, k: int, repeat: int) -> None:
    from interplab.sae.ito import gradient_pursuit, orthogonal_matching_pursuit

    print(f"== (c) pursuits: {n} signals, dictionary {d_sae} x {d_in}, k {k}, float32 on {device}", flush=True)
    g = torch.Generator().manual_seed(0)
    D = torch.randn(d_sae, d_in, generator=g)
    D = (D / D.norm(dim=1, keepdim=True)).to(device)
    x = torch.randn(n, d_in, generator=g).to(device)
    rates = {}
    for name, fn in (("gradient pursuit", gradient_pursuit), ("OMP", orthogonal_matching_pursuit)):
        t = timed(lambda fn=fn: fn(x, D, k), device, repeat)
        codes = fn(x, D, k)
        err = ((codes @ D - x).norm() / x.norm()).item()
        rates[name] = n / t
        print(f"   {name:16s} {n / t:12.0f} signals/s   relative error {err:.3f}", flush=True)
    print(f"   gradient pursuit / OMP: {rates['gradient pursuit'] / rates['OMP']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny sizes, to check the script on a CPU")
    ap.add_argument("--skip-tests", action="store_true", help="skip the device tests")
    a = ap.parse_args()
    device = pick_device()
    if device.type == "cpu":
        print("NO GPU on this machine (no CUDA, no MPS): everything below runs on the CPU "
              + ("at --small sizes." if a.small else "(slow; use --small to only check the script)."))
    else:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "Apple MPS"
        print(f"GPU: {name} ({device}); torch {torch.__version__}")
    if not a.skip_tests:
        run_device_tests()
    if a.small:
        challenge2(device, epochs=5)
        sae_throughput(device, d_in=64, d_sae=512, batch=256, repeat=3)
        pursuit(device, d_in=32, d_sae=256, n=256, k=8, repeat=3)
    else:
        challenge2(device, epochs=5000)
        sae_throughput(device, d_in=768, d_sae=24576, batch=4096, repeat=20)
        pursuit(device, d_in=768, d_sae=24576, n=4096, k=32, repeat=5)


if __name__ == "__main__":
    main()
