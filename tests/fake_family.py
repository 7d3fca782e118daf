"""A challenge family with no network, for testing the suite machinery (tests/test_challenges.py).

The hidden "rule" is a number; solving copies it (odd seeds miss it by 10%); score compares.
"""

from __future__ import annotations

from pathlib import Path

from interplab.io import atomic_write_json, read_json

CALLS: list[str] = []


def make(seed, out, *, quick=False, data_dir=None, quiet=False):
    CALLS.append(f"make {seed}")
    (Path(out) / "public").mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out) / "public" / "challenge.json", {"family": "cnn", "seed": seed,
                                                                 "stated_test_accuracy": 0.9, "number": seed})
    atomic_write_json(Path(out) / "answer.json", {"family": "cnn", "value": seed, "rule_form": "number"})
    return Path(out)


def solve(challenge, out, *, quick=False, data_dir=None, quiet=False):
    CALLS.append(f"solve {challenge.parent.name}")
    seed = read_json(Path(challenge) / "public" / "challenge.json")["number"]
    sol = {"value": seed, "wrong": seed % 2 == 1, "verdict": "unsolved" if seed % 2 else "solved", "rule_form": "number"}
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out) / "solution.json", sol)
    return sol


def score(challenge, solution, *, data_dir=None):
    sol = read_json(solution)
    return {"agreement_hidden": 0.9 if sol["wrong"] else 1.0, "agreement_network": 0.97}
