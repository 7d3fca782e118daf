"""Generated interpretability challenges: make a network under a hidden rule, solve it blind, score it.

A *challenge* is a directory written by a family's ``make``:

- ``public/``: what a solver may read: the network file, a hint file where the family has one,
  and ``challenge.json`` with at least ``family``, ``seed``, ``stated_test_accuracy`` and the
  file names;
- ``answer.json``: the sealed hidden rule (enough to evaluate it on the family's full input set),
  with ``rule_form``, a short name of the rule's form.

A family's ``solve`` reads only ``public/`` and writes ``solution.json`` (the recovered rule in a
form its ``score`` can evaluate, ``verdict`` ``"solved"`` or ``"unsolved"``, and the best partial
rule); ``score`` compares the recovered rule with the hidden one on the full input set
(``agreement_hidden``) and with the network's own labels (``agreement_network``).

Families (each a module ``interplab.challenges.<family>`` exposing ``make``, ``solve``, ``score``):

- ``cnn``: the EIS VII challenge 1 form: the published ConvNet trained on a similarity rule
  (threshold, band or two-sided) to a template MNIST digit, with the digit as a hint image
  rendered in a randomly drawn way (:mod:`interplab.challenges.cnn`);
- ``pairs``: the EIS VII challenge 2 form: a one-layer transformer on a 113x113 label table
  (``interplab.challenges.pairs``).

:func:`suite` makes, solves and scores ``n`` challenges (the families in turn, seeds 0, 1, ...),
resumably, into ``suite.json`` and an HTML report.

Example:
    >>> sorted(FAMILIES)
    ['cnn', 'pairs']
    >>> suite_plan(5)
    [('cnn', 0), ('pairs', 0), ('cnn', 1), ('pairs', 1), ('cnn', 2)]
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from interplab.errors import InterplabError, check
from interplab.io import PathLike, atomic_write_json, read_json

FAMILIES = {"cnn": "interplab.challenges.cnn", "pairs": "interplab.challenges.pairs"}
SOLVED_AT = 0.95
"""A challenge counts as solved when the recovered rule agrees with the hidden rule on at least this fraction."""


def family_available(family: str) -> bool:
    """Whether the module of ``family`` is part of this installation.

    Example:
        >>> family_available("nonexistent")
        False
    """
    name = FAMILIES.get(family)
    return name is not None and importlib.util.find_spec(name) is not None


def family_module(family: str) -> ModuleType:
    """The module of ``family`` (one of :data:`FAMILIES`), imported on first use.

    Example:
        >>> family_module("tetris")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Unknown challenge family 'tetris'; choose one of cnn, pairs.
    """
    check(family in FAMILIES, f"Unknown challenge family {family!r}; choose one of {', '.join(FAMILIES)}.")
    check(family_available(family), f"The {family} challenge family is not in this build of interplab "
                                    f"({FAMILIES[family]} is missing).")
    return importlib.import_module(FAMILIES[family])


def read_challenge(challenge: PathLike) -> dict[str, Any]:
    """The public ``challenge.json`` of a challenge directory.

    Example:
        >>> read_challenge("/nonexistent")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: /nonexistent is not a challenge directory (no public/challenge.json).
    """
    path = Path(challenge) / "public" / "challenge.json"
    check(path.is_file(), f"{challenge} is not a challenge directory (no public/challenge.json).")
    info = read_json(path)
    check(isinstance(info, dict) and "family" in info, f"{path} names no challenge family.")
    return info


def read_answer(challenge: PathLike) -> dict[str, Any]:
    """The sealed ``answer.json`` of a challenge directory (for scoring only; solvers never read it).

    Example:
        >>> read_answer("/nonexistent")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: /nonexistent has no answer.json, so it cannot be scored.
    """
    path = Path(challenge) / "answer.json"
    check(path.is_file(), f"{challenge} has no answer.json, so it cannot be scored.")
    return read_json(path)


def make(family: str, seed: int, out: PathLike, *, quick: bool = False, data_dir: PathLike | None = None,
         quiet: bool = False) -> Path:
    """Generate a challenge of ``family`` from ``seed`` into ``out`` (``public/`` and ``answer.json``).

    ``quick``: a smaller, faster network and training run (for tests and the quick suite).
    Returns ``out``. Errors: unknown or missing family (one sentence).

    Example (trains a network, so not run here)::

        make("cnn", 0, "challenges/cnn-0", quick=True)
    """
    module = family_module(family)
    check(seed >= 0, f"A challenge seed must be 0 or more, got {seed}.")
    return module.make(seed, Path(out), quick=quick, data_dir=None if data_dir is None else Path(data_dir),
                       quiet=quiet)


def solve(challenge: PathLike, out: PathLike, *, quick: bool = False, data_dir: PathLike | None = None,
          quiet: bool = False) -> dict[str, Any]:
    """Solve the challenge in ``challenge`` from its public files only; writes ``out/solution.json``, returns it.

    The family is read from ``public/challenge.json``.

    Example (runs the solver, so not run here)::

        solve("challenges/cnn-0", "solutions/cnn-0")["verdict"]
    """
    info = read_challenge(challenge)
    return family_module(info["family"]).solve(Path(challenge), Path(out), quick=quick,
                                               data_dir=None if data_dir is None else Path(data_dir), quiet=quiet)


def score(challenge: PathLike, solution: PathLike, *, data_dir: PathLike | None = None) -> dict[str, Any]:
    """Agreement of a solution's rule with the hidden rule (``agreement_hidden``) and the network (``agreement_network``).

    ``solution``: the directory ``solve`` wrote (or its ``solution.json``).

    Example (needs a made and solved challenge)::

        score("challenges/cnn-0", "solutions/cnn-0")["agreement_hidden"]
    """
    info = read_challenge(challenge)
    solution = Path(solution)
    if solution.is_dir():
        solution = solution / "solution.json"
    check(solution.is_file(), f"No solution file at {solution}.")
    return family_module(info["family"]).score(Path(challenge), solution,
                                               data_dir=None if data_dir is None else Path(data_dir))


def suite_plan(n: int) -> list[tuple[str, int]]:
    """The ``(family, seed)`` of each of ``n`` suite challenges: the families in turn, seeds 0, 1, ...

    Example: see the module docstring.
    """
    families = list(FAMILIES)
    return [(families[i % len(families)], i // len(families)) for i in range(n)]


def _run_one(family: str, seed: int, root: Path, quick: bool, data_dir: PathLike | None, quiet: bool) -> dict[str, Any]:
    """Make, solve and score one suite challenge; the suite.json row."""
    row: dict[str, Any] = {"challenge": f"{family}-{seed}", "family": family, "seed": seed}
    if not family_available(family):
        row.update(status="missing", note=f"The {family} family is not in this build ({FAMILIES[family]} is missing), "
                                          "so its challenges were not run.")
        return row
    t0 = time.perf_counter()
    challenge, solution = root / row["challenge"] / "challenge", root / row["challenge"] / "solution"
    if not (challenge / "answer.json").is_file():
        make(family, seed, challenge, quick=quick, data_dir=data_dir, quiet=quiet)
    t_make = time.perf_counter() - t0
    solved = solve(challenge, solution, quick=quick, data_dir=data_dir, quiet=quiet)
    t_solve = time.perf_counter() - t0 - t_make
    scored = score(challenge, solution, data_dir=data_dir)
    answer = read_answer(challenge)
    row.update(status="done", rule_form=scored.get("rule_form", answer.get("rule_form", "?")),
               recovered_form=scored.get("recovered_form", solved.get("rule_form", "?")),
               agreement_hidden=float(scored["agreement_hidden"]), agreement_network=float(scored["agreement_network"]),
               verdict=solved.get("verdict", "?"), solved=float(scored["agreement_hidden"]) >= SOLVED_AT,
               stated_test_accuracy=read_challenge(challenge).get("stated_test_accuracy"),
               seconds=time.perf_counter() - t0, seconds_make=t_make, seconds_solve=t_solve)
    return row


def suite(n: int, out: PathLike, *, quick: bool = False, data_dir: PathLike | None = None,
          quiet: bool = False) -> dict[str, Any]:
    """Make, solve and score ``n`` challenges (:func:`suite_plan`) into ``out``; returns the suite record.

    Writes ``out/suite.json`` after every challenge (a rerun skips the finished ones: resumable)
    and ``out/report.html`` with the table (challenge, family, hidden rule form, agreement of the
    recovered rule with the hidden rule and with the network, verdict, seconds). A family that is
    not in this build gets one row saying so. A rerun with another ``quick`` refuses.

    Example (trains networks, so not run here)::

        suite(4, "runs/suite4", quick=True)["n_solved"]
    """
    from tqdm import tqdm

    check(n >= 1, f"A suite needs at least one challenge, got {n}.")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "suite.json"
    record: dict[str, Any] = {"n": n, "quick": quick, "rows": []}
    if path.is_file():
        old = read_json(path)
        check(bool(old.get("quick")) == quick, f"{path} was written with quick={old.get('quick')}; use another --out.")
        record["rows"] = [r for r in old.get("rows", []) if r.get("status") == "done"]
    done = {r["challenge"] for r in record["rows"]}
    t0 = time.perf_counter()
    for family, seed in tqdm(suite_plan(n), desc="challenges", disable=quiet):
        name = f"{family}-{seed}"
        if name in done:
            continue
        row = _run_one(family, seed, root, quick, data_dir, quiet)
        record["rows"] = [r for r in record["rows"] if r["challenge"] != name] + [row]
        record["rows"].sort(key=lambda r: suite_plan(n).index((r["family"], r["seed"])))
        _summarize(record)
        atomic_write_json(path, record)
        if not quiet and row["status"] == "done":
            print(f"{name}: {row['rule_form']}, agreement with the hidden rule {row['agreement_hidden']:.4f}, "
                  f"with the network {row['agreement_network']:.4f}, {row['verdict']}, {row['seconds']:.0f} s")
    record["rows"] = [r for r in record["rows"] if (r["family"], r["seed"]) in suite_plan(n)]
    record["seconds_this_run"] = time.perf_counter() - t0
    _summarize(record)
    atomic_write_json(path, record)
    report_path = suite_report(record, root / "report.html")
    from interplab.report import announce

    announce([f"suite of {n}: {record['n_solved']} of {record['n_done']} run challenges solved (recovered rule agrees "
              f"with the hidden rule on at least {SOLVED_AT:.0%} of inputs); {record['seconds_total']:.0f} s in all"]
             + [r["note"] for r in record["rows"] if r["status"] == "missing"][:1], report_path)
    return record


def _summarize(record: dict[str, Any]) -> None:
    done = [r for r in record["rows"] if r["status"] == "done"]
    record["n_done"] = len(done)
    record["n_solved"] = sum(bool(r["solved"]) for r in done)
    record["n_verdict_solved"] = sum(r["verdict"] == "solved" for r in done)
    record["seconds_total"] = float(sum(r["seconds"] for r in done))


def suite_report(record: dict[str, Any], path: PathLike) -> Path:
    """The suite's HTML report (one table row per challenge) written to ``path``.

    Example:
        >>> import tempfile, os
        >>> rec = {"n": 1, "quick": True, "n_done": 1, "n_solved": 1, "n_verdict_solved": 1, "seconds_total": 3.0,
        ...        "rows": [{"challenge": "cnn-0", "family": "cnn", "seed": 0, "status": "done", "rule_form": "band",
        ...                  "recovered_form": "band", "agreement_hidden": 0.99, "agreement_network": 0.97,
        ...                  "verdict": "solved", "solved": True, "seconds": 3.0}]}
        >>> p = suite_report(rec, os.path.join(tempfile.mkdtemp(), "report.html"))
        >>> "cnn-0" in p.read_text()
        True
    """
    from interplab.report import Report

    r = Report("Challenge suite: hidden rules recovered from networks", subtitle=f"{record['n']} challenges"
               + (" (quick networks)" if record.get("quick") else ""))
    r.numbers({"challenges run": record["n_done"], "solved (>= 95% agreement with the hidden rule)": record["n_solved"],
               "solver's own verdict 'solved'": record["n_verdict_solved"], "seconds": round(record["seconds_total"])})
    r.text("Each challenge is generated from its seed (a network trained on a hidden rule, public files and a sealed "
           "answer), solved from the public files alone, then scored on the family's full input set: agreement of "
           "the recovered rule with the hidden rule, and with the network's labels.")
    rows = [[x["challenge"], x["family"], x["rule_form"], x["recovered_form"], x["agreement_hidden"],
             x["agreement_network"], x["verdict"], round(x["seconds"])] for x in record["rows"] if x["status"] == "done"]
    r.table(["challenge", "family", "hidden rule form", "recovered form", "agreement with hidden rule",
             "agreement with network", "verdict", "seconds"], rows,
            caption="One row per challenge; seconds include making (training) and solving.")
    for note in sorted({x["note"] for x in record["rows"] if x["status"] == "missing"}):
        r.text(note)
    return r.save(path)


__all__ = ["FAMILIES", "SOLVED_AT", "family_available", "family_module", "read_challenge", "read_answer", "make",
           "solve", "score", "suite_plan", "suite", "suite_report"]
