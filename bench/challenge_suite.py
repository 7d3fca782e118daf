"""The quick challenge suite (4 challenges: 2 cnn, 2 pairs where that family is in the build), timed.

Makes, solves and scores ``interplab challenge suite --n 4 --quick`` in a fresh directory and
prints the table, the wall time and whether it stayed under the 5-minute budget (the issue's
acceptance). The baseline is that budget, not another implementation. Without ``--quick`` it
runs the full challenges (published network sizes; minutes each).

``--family cnn --seeds 10,12,14`` instead makes, solves and scores those seeds of one family (to
reach rule forms and hint renderings the first seeds do not draw), with the same table.

Run: ``python bench/challenge_suite.py --quick [--n 4] [--out DIR] [--data-dir D]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

BUDGET_S = 300.0


def seeds(family: str, which: list[int], out: Path, quick: bool, data_dir: Path | None) -> dict:
    """Make, solve and score the given seeds of one family into ``out``; the record in the suite's shape."""
    from interplab.challenges import SOLVED_AT, make, score, solve

    rows = []
    for seed in which:
        t0 = time.perf_counter()
        c, s = out / f"{family}-{seed}" / "challenge", out / f"{family}-{seed}" / "solution"
        if not (c / "answer.json").is_file():
            make(family, seed, c, quick=quick, data_dir=data_dir, quiet=True)
        sol = solve(c, s, quick=quick, data_dir=data_dir, quiet=True)
        sc = score(c, s, data_dir=data_dir)
        rows.append({"challenge": f"{family}-{seed}", "status": "done", "rule_form": sc.get("rule_form", "?"),
                     "agreement_hidden": sc["agreement_hidden"], "agreement_network": sc["agreement_network"],
                     "verdict": sol["verdict"], "seconds": time.perf_counter() - t0,
                     "extra": {k: sc[k] for k in ("rendering", "input_scale_detected") if k in sc}})
        print(rows[-1])
    return {"rows": rows, "n_done": len(rows), "n_solved": sum(r["agreement_hidden"] >= SOLVED_AT for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Quick challenges and solver.")
    ap.add_argument("--n", type=int, default=4, help="Number of challenges (default 4).")
    ap.add_argument("--out", type=Path, default=None, help="Suite directory (default: a fresh temporary one).")
    ap.add_argument("--data-dir", type=Path, default=None, help="Data directory.")
    ap.add_argument("--family", default="cnn", help="Family of --seeds.")
    ap.add_argument("--seeds", default=None, help="Comma-separated seeds of --family to run instead of the suite.")
    args = ap.parse_args()

    import torch

    from interplab.challenges import suite

    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="challenge-suite-"))
    if args.out is None:
        shutil.rmtree(out)
    t0 = time.perf_counter()
    if args.seeds:
        rec = seeds(args.family, [int(v) for v in args.seeds.split(",")], out, args.quick, args.data_dir)
    else:
        rec = suite(args.n, out, quick=args.quick, data_dir=args.data_dir, quiet=True)
    wall = time.perf_counter() - t0
    print(f"{'challenge':<10} {'hidden rule form':<32} {'vs hidden':>9} {'vs network':>10} {'verdict':>9} {'s':>5}")
    for r in rec["rows"]:
        if r["status"] != "done":
            print(f"{r['challenge']:<10} {r['note']}")
            continue
        print(f"{r['challenge']:<10} {r['rule_form']:<32} {r['agreement_hidden']:9.4f} {r['agreement_network']:10.4f} "
              f"{r['verdict']:>9} {r['seconds']:5.0f}")
    print(f"{rec['n_solved']} of {rec['n_done']} run challenges solved at >= 95% agreement with the hidden rule")
    if args.quick and not args.seeds and args.n == 4:
        print(f"wall time {wall:.0f} s; budget {BUDGET_S:.0f} s; ratio {wall / BUDGET_S:.2f} "
              f"({'within' if wall <= BUDGET_S else 'OVER'} budget)")
    else:
        print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
