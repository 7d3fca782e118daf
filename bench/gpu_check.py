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
   dictionary, k = 32;
4. (d) every study's quick path on the device (``interplab study NAME --quick --device DEV``, one
   subprocess each, 180 s at most each and none started after 300 s: ``--study-timeout``,
   ``--study-budget``): exit code, wall time and the last headline line. With
   ``--small`` the studies whose options allow it run at tiny sizes instead, the others are listed as
   covered by the device tests (which run each study's smallest setting on every device).

    python bench/gpu_check.py --studies grokking,sae-mlp   # only these quick paths
    python bench/gpu_check.py --skip-tests --studies none  # only (a)-(c)

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
STUDIES = ("eis-transformer", "eis-cnn", "tms", "sae-tms", "sae-mlp", "atp", "grokking", "fact-finding", "embeddings",
           "lm", "sae-lm", "circuit-discovery")
# --small: CLI options that make a study tiny (studies without such options are left to the device tests)
SMALL_ARGS = {
    "grokking": ["--p", "11", "--max-epochs", "30", "--checkpoint-every", "10"],
    "sae-tms": ["--n-features", "6", "--n-hidden", "3", "--tms-epochs", "2", "--widths", "3,6", "--l1", "0.3",
                "--steps", "30"],
    "sae-mlp": ["--p", "7", "--model-epochs", "5", "--steps", "20", "--batch-size", "16", "--l1", "0.1",
                "--dashboards", "1"],
    "tms": ["--geometry-sparsity", "0,0.9", "--geometry-restarts", "1", "--geometry-steps", "50", "--phase-grid", "2",
            "--phase-restarts", "1", "--phase-steps", "50", "--dim-features", "8", "--dim-hidden", "2",
            "--dim-points", "2", "--dim-steps", "50", "--finite-features", "6", "--finite-T", "3",
            "--finite-steps", "50", "--steps-per-epoch", "25"],
    "fact-finding": ["--n", "8", "--mlp-hidden", "16", "--mlp-epochs", "20", "--n-first", "6", "--n-last", "6",
                     "--n-names", "20", "--d-model", "16", "--n-layers", "1", "--d-mlp", "16", "--max-epochs", "20",
                     "--n-splits", "2", "--n-quads", "50"],
    "embeddings": ["--n-sentences", "300", "--vocab-size", "400", "--n-ctx", "12", "--d-model", "16", "--d-mlp", "32",
                   "--n-layers", "1", "--epochs", "1", "--n-splits", "2", "--n-eval-sequences", "20"],
}


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
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-rfEs", "tests/test_devices.py"],
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


def study_quick_paths(device: torch.device, names: list[str], small: bool, timeout: float, budget: float) -> None:
    """Each study's quick path (``--small``: tiny options) on ``device``, one subprocess each, at most ``timeout``
    seconds each; no study is started once ``budget`` seconds have gone (the rest are listed as not run)."""
    import tempfile

    print(f"== (d) study quick paths on {device}" + (" (tiny options with --small)" if small else ""), flush=True)
    out_root = Path(tempfile.mkdtemp(prefix="gpu_check_studies_"))
    start = time.perf_counter()
    for name in names:
        if time.perf_counter() - start > budget:
            print(f"   {name:18s} not run: the {budget:.0f} s budget of (d) is spent (--studies {name} runs it)")
            continue
        if small and name not in SMALL_ARGS:
            print(f"   {name:18s} skipped at --small (no tiny CLI options; covered by tests/test_devices.py)")
            continue
        args = SMALL_ARGS[name] if small else ["--quick"]
        cmd = [sys.executable, "-m", "interplab.cli", "study", name, *args, "--device", device.type, "--quiet",
               "--out", str(out_root / name)]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            code, text = proc.returncode, (proc.stdout + proc.stderr).strip()
        except subprocess.TimeoutExpired:
            code, text = "timeout", f"stopped after {timeout:.0f} s"
        wall = time.perf_counter() - t
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("report:")]
        last = lines[-1][:150] if lines else ""
        print(f"   {name:18s} exit {code}  {wall:7.1f} s  {last}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny sizes, to check the script on a CPU")
    ap.add_argument("--skip-tests", action="store_true", help="skip the device tests")
    ap.add_argument("--skip-measurements", action="store_true", help="skip (a), (b) and (c)")
    ap.add_argument("--studies", default="all", help="comma-separated study names for (d), 'all' or 'none'")
    ap.add_argument("--study-timeout", type=float, default=180.0, help="seconds allowed to each study in (d)")
    ap.add_argument("--study-budget", type=float, default=300.0, help="no study of (d) starts after this many seconds")
    a = ap.parse_args()
    studies = list(STUDIES) if a.studies == "all" else [] if a.studies == "none" else a.studies.split(",")
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        ap.error(f"unknown studies {', '.join(unknown)}; choose from {', '.join(STUDIES)}")
    device = pick_device()
    if device.type == "cpu":
        print("NO GPU on this machine (no CUDA, no MPS): everything below runs on the CPU "
              + ("at --small sizes." if a.small else "(slow; use --small to only check the script)."))
    else:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "Apple MPS"
        print(f"GPU: {name} ({device}); torch {torch.__version__}")
    if not a.skip_tests:
        run_device_tests()
    if a.skip_measurements:
        study_quick_paths(device, studies, small=a.small, timeout=a.study_timeout, budget=a.study_budget)
    elif a.small:
        challenge2(device, epochs=5)
        sae_throughput(device, d_in=64, d_sae=512, batch=256, repeat=3)
        pursuit(device, d_in=32, d_sae=256, n=256, k=8, repeat=3)
        study_quick_paths(device, studies, small=True, timeout=a.study_timeout, budget=a.study_budget)
    else:
        challenge2(device, epochs=5000)
        sae_throughput(device, d_in=768, d_sae=24576, batch=4096, repeat=20)
        pursuit(device, d_in=768, d_sae=24576, n=4096, k=32, repeat=5)
        study_quick_paths(device, studies, small=False, timeout=a.study_timeout, budget=a.study_budget)


if __name__ == "__main__":
    main()
