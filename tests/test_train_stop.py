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
