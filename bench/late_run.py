"""Train the EIS VII challenge 2 published protocol (the study's ``--full`` run) and keep snapshots of the full
training state (weights, Adam's moments, generator) every ``--every`` epochs, for late-phase measurements.

The run lands in ``OUT/run`` exactly as ``interplab study eis-transformer --full --out OUT`` trains it (same
task, model and :func:`published_train_config`), so the study reuses it; the snapshots are
``OUT/snapshots/state_EEEEEE.pt`` (the ``checkpoints/state.pt`` of epoch E).

    python bench/late_run.py --out runs/eis-full            # 5000 epochs, snapshots every 250
    python bench/subnormals.py --run runs/eis-full/run --state runs/eis-full/snapshots/state_002500.pt

``--from-run DIR --until E`` instead continues a copy of any training run (e.g. a grokking run) in
``OUT/run`` with its stored settings up to epoch ``E``, with snapshots at its checkpoints.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from interplab.models import Transformer
from interplab.runs import state_path
from interplab.studies.eis_transformer import published_train_config
from interplab.tasks.pair_labels import challenge2_config, pair_label_task
from interplab.train import train_or_resume


def continue_run(src: Path, out: Path, until: int | None, quiet: bool) -> None:
    from interplab.models import model_from_config_dict
    from interplab.runs import read_json
    from interplab.tasks import make_task
    from interplab.train import TrainConfig, train

    run, snaps = out / "run", out / "snapshots"
    if not run.exists():
        shutil.copytree(src, run)
    snaps.mkdir(parents=True, exist_ok=True)
    config = read_json(run / "config.json")
    cfg = TrainConfig(**{k: tuple(v) if k == "betas" else v for k, v in config["train"].items()})
    model = model_from_config_dict(config["model"])

    def on_log(row: dict) -> None:
        e = int(row["epoch"]) - cfg.log_every
        if e > 0 and e % cfg.checkpoint_every == 0:
            shutil.copy(state_path(run), snaps / f"state_{e:06d}.pt")
            print(f"snapshot epoch {e}: train loss {row['train_loss']:.3g} (at epoch {row['epoch']})", flush=True)

    r = train(model, make_task(config["task"]), cfg, run, resume=True, quiet=quiet, on_log=on_log,
              stop=(lambda row: until is not None and row["epoch"] >= until))
    shutil.copy(state_path(run), snaps / f"state_{r.epochs_run:06d}.pt")
    print(f"done: {r.epochs_run} epochs, train loss {r.final['train_loss']:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=int, default=250, help="snapshot every this many epochs (a multiple of 250)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--from-run", default=None, help="continue a copy of this run instead (stored settings)")
    ap.add_argument("--until", type=int, default=None, help="with --from-run: stop after this epoch")
    args = ap.parse_args()
    if args.from_run is not None:
        continue_run(Path(args.from_run), Path(args.out), args.until, args.quiet)
        return
    out = Path(args.out)
    snaps = out / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    cfg = published_train_config(args.seed, full=True)
    if args.every % cfg.checkpoint_every:
        raise SystemExit(f"--every must be a multiple of {cfg.checkpoint_every}")
    run = out / "run"

    def on_log(row: dict) -> None:
        # the checkpoint of epoch E is written after E's log row: copy it at the next logged epoch
        e = int(row["epoch"]) - cfg.log_every
        if e > 0 and e % args.every == 0 and state_path(run).is_file():
            shutil.copy(state_path(run), snaps / f"state_{e:06d}.pt")
            print(f"snapshot epoch {e}: train loss {row['train_loss']:.3g} (at epoch {row['epoch']})", flush=True)

    task = pair_label_task(labels="auto", seed=args.seed)
    r = train_or_resume(Transformer(challenge2_config(), seed=args.seed), task, cfg, run, quiet=args.quiet,
                        on_log=on_log)
    shutil.copy(state_path(run), snaps / f"state_{r.epochs_run:06d}.pt")
    print(f"done: {r.epochs_run} epochs, train loss {r.final['train_loss']:.3g}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
