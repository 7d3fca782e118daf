"""The optional ``stop`` callback of interplab.train.train (added for the grokking study)."""

from interplab.models import Transformer
from interplab.tasks.modular import modular_task
from interplab.train import TrainConfig, train


def test_stop_callback_ends_training_and_marks_the_run_finished(tmp_path):
    task = modular_task(p=5, frac_train=0.6, seed=0)
    model = Transformer(task.default_model_config(), seed=0)
    cfg = TrainConfig(epochs=100, log_every=5, checkpoint_every=50)
    result = train(model, task, cfg, tmp_path, quiet=True, stop=lambda row: row["epoch"] >= 15)
    assert result.stopped_early and result.epochs_run == 15
    again = train(Transformer(task.default_model_config(), seed=0), task, cfg, tmp_path, resume=True, quiet=True)
    assert again.epochs_run == 15 and [m["epoch"] for m in again.metrics] == [1, 5, 10, 15]


def test_stop_loss_waits_stop_patience_epochs_below_the_tolerance_and_survives_a_resume(tmp_path):
    task = modular_task(p=5, frac_train=0.6, seed=0)
    cfg = TrainConfig(epochs=400, lr=1e-2, weight_decay=0.0, log_every=5, checkpoint_every=5, stop_loss=0.05,
                      stop_patience=20)
    result = train(Transformer(task.default_model_config(), seed=0), task, cfg, tmp_path / "a", quiet=True)
    assert result.stopped_early
    losses = {m["epoch"]: m["train_loss"] for m in result.metrics}
    first = min(e for e, v in losses.items() if all(losses[k] < 0.05 for k in losses if k >= e))
    assert result.epochs_run == first + 20  # stays below from `first` on and stops 20 epochs later
    assert max(losses[e] for e in losses if e < first) >= 0.05

    def interrupt(row: dict) -> None:
        if row["epoch"] == first + 10:  # mid-streak: the streak start must come back from the checkpoint
            raise KeyboardInterrupt

    try:
        train(Transformer(task.default_model_config(), seed=0), task, cfg, tmp_path / "b", quiet=True,
              on_log=interrupt)
    except KeyboardInterrupt:
        pass
    again = train(Transformer(task.default_model_config(), seed=0), task, cfg, tmp_path / "b", resume=True, quiet=True)
    assert again.stopped_early and again.epochs_run == result.epochs_run
