"""The quick challenge suite (4 challenges: 2 cnn, 2 pairs where that family is in the build), timed.

Makes, solves and scores ``interplab challenge suite --n 4 --quick`` in a fresh directory and
prints the table, the wall time and whether it stayed under the 5-minute budget (the issue's
acceptance). The baseline is that budget, not another implementation. Without ``--quick`` it
runs the full challenges (published network sizes; minutes each).

Run: ``python bench/challenge_suite.py --quick [--n 4] [--out DIR] [--data-dir D]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

BUDGET_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Quick challenges and solver.")
    ap.add_argument("--n", type=int, default=4, help="Number of challenges (default 4).")
    ap.add_argument("--out", type=Path, default=None, help="Suite directory (default: a fresh temporary one).")
    ap.add_argument("--data-dir", type=Path, default=None, help="Data directory.")
    args = ap.parse_args()

    import torch

    from interplab.challenges import suite

    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="challenge-suite-"))
    if args.out is None:
        shutil.rmtree(out)
    t0 = time.perf_counter()
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
    print(f"wall time {wall:.0f} s; budget {BUDGET_S:.0f} s; ratio {wall / BUDGET_S:.2f} "
          f"({'within' if wall <= BUDGET_S else 'OVER'} budget)")


if __name__ == "__main__":
    main()
