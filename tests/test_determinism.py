"""Same seed, same bits at two threads: training, SAE training and a study, run twice and killed-and-resumed.

The suite pins one thread per worker (conftest), so each case runs in a subprocess that calls
``torch.set_num_threads(2)``. A "killed" run SIGKILLs itself right after its second checkpoint
is on disk (a real kill -9, at a reproducible point) and is then resumed in a fresh process.
Four processes per case make these slow (measured 572 s for the SAE case and 976 s for the study
case at load average 15 on 2 shared cores; not yet timed on a quiet machine).
At two threads the backward of ``W_E[tokens]`` is not deterministic without
:mod:`interplab.numerics` (its gradients differ from call to call), so these runs would differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from interplab.runs import load_tensors

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(2)
    from interplab import runs
    what, out, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
    if kill:  # SIGKILL this process right after its second checkpoint is written
        original, calls = runs.RunLog.checkpoint, []
        def checkpoint(self, state, weights=None):
            original(self, state, weights)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        runs.RunLog.checkpoint = checkpoint
    if what == "train":
        from interplab.models import Transformer
        from interplab.tasks.modular import modular_task
        from interplab.train import TrainConfig, train_or_resume
        task = modular_task(p=23, frac_train=0.5, seed=0)
        cfg = TrainConfig(epochs=60, lr=1e-3, weight_decay=1.0, log_every=10, checkpoint_every=20, seed=0)
        train_or_resume(Transformer(task.default_model_config(), seed=0), task, cfg, out, quiet=True)
    elif what == "sae":
        from interplab.models import MLP, MLPConfig
        from interplab.sae.buffer import Site, sample_rows
        from interplab.sae.model import SAE, SAEConfig
        from interplab.sae.train import SAETrainConfig, make_buffer, train_sae_or_resume
        model = MLP(MLPConfig(d_in=16, d_hidden=(64,), d_out=2), seed=0)
        x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
        cfg = SAETrainConfig(steps=60, batch_size=256, buffer_size=2048, log_every=10, checkpoint_every=20,
                             dead_fix="resample", resample_every=20, dead_window=5)
        buf = make_buffer(model, Site("layers.0.hook_post"), sample_rows(x), cfg)
        train_sae_or_resume(SAE(SAEConfig(d_in=64, d_sae=256), seed=0), buf, cfg, out, quiet=True)
    else:
        from interplab.studies import grokking
        grokking.run(out, p=23, max_epochs=60, checkpoint_every=20, quiet=True)
""")


def _run(what: str, out: Path, kill: bool = False) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, what, str(out), "kill" if kill else "run"], env=env,
                          capture_output=True, text=True, timeout=600)
    if kill:
        assert proc.returncode == -9, proc.stderr  # it was killed, not finished
    else:
        assert proc.returncode == 0, proc.stderr


def _same_files(a: Path, b: Path, name: str) -> None:
    x, y = load_tensors(a / name), load_tensors(b / name)
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("what, weights", [("train", "model.safetensors"), ("sae", "sae_weights.safetensors")])
def test_two_threads_twice_and_killed_and_resumed_are_bitwise_equal(tmp_path, what, weights):
    _run(what, tmp_path / "a")
    _run(what, tmp_path / "b")
    _run(what, tmp_path / "c", kill=True)
    _run(what, tmp_path / "c")  # the run policy resumes the killed run
    _same_files(tmp_path / "a", tmp_path / "b", weights)
    _same_files(tmp_path / "a", tmp_path / "c", weights)
    rows = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    key = "epoch" if what == "train" else "step"
    assert [r[key] for r in rows] == [1, 10, 20, 30, 40, 50, 60]


@pytest.mark.slow
def test_a_study_at_two_threads_gives_the_same_results_twice_and_after_a_kill(tmp_path):
    for name in ("a", "b"):
        _run("study", tmp_path / name)
    _run("study", tmp_path / "c", kill=True)
    _run("study", tmp_path / "c")
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in "abc"]
    for r in results:  # wall-clock keys are the only ones allowed to differ
        for k in ("wall_seconds", "train_seconds", "seconds"):
            r.pop(k, None)
    assert results[0] == results[1] == results[2]
    _same_files(tmp_path / "a", tmp_path / "c", "model.safetensors")
