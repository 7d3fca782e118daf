"""The training loop: learning, grokking, metrics and checkpoints, exact resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interplab.errors import InterplabError
from interplab.io import load_tensors
from interplab.models import Transformer
from interplab.tasks.modular import modular_task
from interplab.tasks.sequences import sorting_task
from interplab.train import TrainConfig, train


def test_modular_addition_groks_to_full_test_accuracy(tmp_path) -> None:
    """Acceptance 2: a 1-layer transformer groks addition mod 23 with weight decay, well under a minute."""
    task = modular_task(p=23, frac_train=0.5, seed=0)
    model = Transformer(task.default_model_config(), seed=0)
    start = time.process_time()  # CPU time: the machine running the suite may be shared
    result = train(model, task, TrainConfig(epochs=2000, lr=1e-3, weight_decay=10.0, log_every=20),
                   tmp_path, quiet=True)
    assert time.process_time() - start < 60
    assert result.final["test_acc"] == 1.0 and result.final["train_acc"] == 1.0
    first_perfect_train = min(m["epoch"] for m in result.metrics if m["train_acc"] == 1.0)
    first_perfect_test = min(m["epoch"] for m in result.metrics if m["test_acc"] == 1.0)
    assert first_perfect_train < first_perfect_test  # memorisation comes first, generalisation later


def test_run_directory_contents(tmp_path) -> None:
    task = modular_task(p=7, frac_train=0.5, seed=1)
    model = Transformer(task.default_model_config(), seed=1)
    train(model, task, TrainConfig(epochs=120, log_every=50, checkpoint_every=40), tmp_path, quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 50, 100, 120]
    assert {"epoch", "train_loss", "train_acc", "test_acc", "lr", "time"} <= set(rows[0])
    history = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch_*.safetensors"))
    assert history == ["epoch_000040.safetensors", "epoch_000080.safetensors", "epoch_000120.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"]["name"] == "modular-addition" and config["train"]["epochs"] == 120
    final = load_tensors(tmp_path / "model.safetensors")
    assert torch.equal(final["W_E"], model.W_E)
    assert torch.equal(load_tensors(tmp_path / "checkpoints" / "epoch_000120.safetensors")["W_E"], model.W_E)


def test_minibatch_resume_in_process_is_bitwise_exact(tmp_path) -> None:
    task = sorting_task(n_values=8, k=3, n_examples=200, seed=0)
    cfg = TrainConfig(epochs=12, batch_size=32, lr=3e-3, weight_decay=0.1, checkpoint_every=5, log_every=3,
                      schedule="cosine", warmup_epochs=2, seed=7)
    full = Transformer(task.default_model_config(), seed=0)
    train(full, task, cfg, tmp_path / "full", quiet=True)
    part = Transformer(task.default_model_config(), seed=0)

    def crash_after_checkpoint(row: dict) -> None:
        if row["epoch"] == 6:  # the checkpoint of epoch 5 is on disk, epoch 6's is not
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(part, task, cfg, tmp_path / "part", quiet=True, on_log=crash_after_checkpoint)
    resumed = Transformer(task.default_model_config(), seed=99)
    result = train(resumed, task, cfg, tmp_path / "part", resume=True, quiet=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [m["epoch"] for m in result.metrics] == [1, 3, 6, 9, 12]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "interplab.cli", *args]


def test_sigkill_and_resume_gives_bitwise_identical_weights(tmp_path) -> None:
    """Acceptance 6: kill -9 mid-run, --resume, compare with an uninterrupted run."""
    args = ["train", "modular-addition", "--p", "11", "--frac-train", "0.5", "--epochs", "1500", "--seed", "3",
            "--checkpoint-every", "100", "--quiet"]
    ref = subprocess.run(_cli(*args, "--out", str(tmp_path / "ref")), capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run / "checkpoints" / "epoch_000200.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / "epoch_001500.safetensors").exists(), "the run was not interrupted"
    resumed = subprocess.run(_cli("train", "modular-addition", "--resume", "--out", str(run), "--quiet"),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_tensors(tmp_path / "ref" / "model.safetensors"), load_tensors(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 1500


def test_nan_loss_is_reported_in_one_sentence() -> None:
    task = modular_task(p=5, frac_train=0.5, seed=0)
    model = Transformer(task.default_model_config(), seed=0)
    with torch.no_grad():
        model.W_U.fill_(float("nan"))
    with pytest.raises(InterplabError, match="diverged"):
        train(model, task, TrainConfig(epochs=3), quiet=True)


def test_refuses_to_overwrite_a_run(tmp_path) -> None:
    task = modular_task(p=5, frac_train=0.5, seed=0)
    train(Transformer(task.default_model_config()), task, TrainConfig(epochs=2), tmp_path, quiet=True)
    with pytest.raises(InterplabError, match="already holds a training run"):
        train(Transformer(task.default_model_config()), task, TrainConfig(epochs=2), tmp_path, quiet=True)


def test_schedules() -> None:
    cfg = TrainConfig(epochs=10, lr=2.0, schedule="linear", warmup_epochs=0)
    assert [cfg.lr_at(e) for e in (0, 5)] == [2.0, 1.0]
    assert TrainConfig(epochs=10, lr=1.0, schedule="warmup", warmup_epochs=4).lr_at(1) == 0.5
