"""The command line: training, info, and one-sentence errors with exit code 2."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "interplab.cli", *args], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env=full_env)


def assert_one_sentence_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_then_info(tmp_path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", "modular-addition", "--p", "7", "--frac-train", "0.5", "--epochs", "60",
                     "--seed", "1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "test_acc" in result.stdout and (out / "model.safetensors").is_file()
    info = run_cli("info", str(out))
    assert info.returncode == 0 and '"modular-addition"' in info.stdout and '"epoch": 60' in info.stdout


def test_corrupt_checkpoint(tmp_path) -> None:
    out = tmp_path / "run"
    assert run_cli("train", "modular-addition", "--p", "5", "--epochs", "200", "--checkpoint-every", "100",
                   "--out", str(out), "--quiet").returncode == 0
    (out / "checkpoints" / "state.pt").write_bytes(b"\x00garbage" * 10)
    assert_one_sentence_error(run_cli("train", "modular-addition", "--resume", "--out", str(out)), "corrupt")


def test_missing_data_directory(tmp_path) -> None:
    result = run_cli("train", "pair-labels", "--epochs", "1", "--data-dir", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "run"))
    assert_one_sentence_error(result, "Data directory", "does not exist")


def test_malformed_and_malicious_label_pickles(tmp_path) -> None:
    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'EXPLOITED'}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"labels": Exploit()}))
    assert_one_sentence_error(run_cli("train", "pair-labels", "--labels", str(evil), "--out", str(tmp_path / "a")),
                              "not a numpy-only pickle")
    assert not (tmp_path / "EXPLOITED").exists()
    wrong_shape = tmp_path / "shape.pkl"
    wrong_shape.write_bytes(pickle.dumps({"labels": np.zeros((5, 7))}))
    assert_one_sentence_error(run_cli("train", "pair-labels", "--labels", str(wrong_shape), "--out",
                                      str(tmp_path / "b")), "square")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not really a pickle")
    assert_one_sentence_error(run_cli("train", "pair-labels", "--labels", str(garbage), "--out", str(tmp_path / "c")))


def test_bad_option_values(tmp_path) -> None:
    assert_one_sentence_error(run_cli("train", "modular-addition", "--lr", "-1", "--out", str(tmp_path / "x")), "lr")
    assert_one_sentence_error(run_cli("train", "no-such-task", "--out", str(tmp_path / "y")), "Unknown task")
    assert_one_sentence_error(run_cli("train", "modular-division", "--p", "12", "--out", str(tmp_path / "z")), "prime")
    assert_one_sentence_error(run_cli("info", str(tmp_path / "nothing")), "does not exist")
