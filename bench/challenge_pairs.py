"""Pairs challenges end to end: make seeds, solve each from its public files only, score, print a table.

    python bench/challenge_pairs.py --seeds 0-9 --out runs/challenge-pairs [--quick] [--phase make|solve|all]

``make`` trains one network per seed (the published settings, default stopping rule; ``--quick``
caps the epochs); ``solve`` moves each ``answer.json`` aside while solving (so the solver
cannot read it), puts it back and scores. The table: seed, hidden rule form, recovered op and
method, agreement of the recovered rule with the hidden rule and with the network, verdict,
seconds (make, solve); then the count with agreement >= 95% and the total time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from interplab.challenges import pairs


def seeds_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--out", type=Path, default=Path("runs/challenge-pairs"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--phase", choices=("make", "solve", "all"), default="all")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    rows = []
    for seed in seeds_arg(args.seeds):
        d = args.out / f"pairs-{seed}"
        t_make = 0.0
        if args.phase in ("make", "all"):
            t0 = time.perf_counter()
            pairs.make(seed, d, quick=args.quick, quiet=True)
            t_make = time.perf_counter() - t0
            ans = json.loads((d / "answer.json").read_text())
            print(f"made seed {seed}: {ans['rule_form']}, {ans['epochs']} epochs, network accuracy "
                  f"{ans['network_accuracy_all']:.4f}, {t_make:.0f} s", flush=True)
        if args.phase == "make":
            continue
        sealed = d / "answer.json"
        aside = d.parent / f".{d.name}-answer.json"
        os.replace(sealed, aside)  # the solver sees public/ only
        try:
            t0 = time.perf_counter()
            sol = pairs.solve(d, d / "solution", quick=args.quick, quiet=True)
            t_solve = time.perf_counter() - t0
        finally:
            os.replace(aside, sealed)
        sc = pairs.score(d, d / "solution")
        ans = json.loads(sealed.read_text())
        rows.append((seed, sc["rule_form"], f"{sol['op'].upper()} ({sol['method']})", sc["agreement_hidden"],
                     sc["agreement_network"], sc["network_accuracy"], sol["hidden_agreement_bound"], sol["verdict"], ans.get("train_seconds", t_make),
                     t_solve))
        print("seed {} | {} | {} | hidden {:.4f} | network {:.4f} | net acc {:.4f} | bound {:.4f} | {} | make {:.0f} s | "
              "solve {:.0f} s"
              .format(*rows[-1]), flush=True)
    if rows:
        print("\n| seed | hidden rule | recovered | agree hidden | agree network | network acc | bound | verdict | train s "
              "| solve s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print("| {} | {} | {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {} | {:.0f} | {:.0f} |".format(*r))
        ok = sum(r[3] >= 0.95 for r in rows)
        print(f"\nagreement with the hidden rule >= 0.95: {ok} of {len(rows)}; "
              f"solved verdicts: {sum(r[7] == 'solved' for r in rows)}; train {sum(r[8] for r in rows):.0f} s, "
              f"solve {sum(r[9] for r in rows):.0f} s")
    print(f"total {time.perf_counter() - t_all:.0f} s (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
