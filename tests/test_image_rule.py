import numpy as np
import pytest

from interplab.errors import InterplabError
from interplab.tasks.image_rule import image_rule_task
from interplab.train import Objective


def test_image_rule_task_labels_and_protocol():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 28, 28)).astype(np.uint8)
    task = image_rule_task(images, lambda x: (x[:, 0, 0] > 127).astype(int), frac_train=0.5, seed=1)
    assert isinstance(task, Objective)
    assert task.labels.tolist() == (images[:, 0, 0] > 127).astype(int).tolist()
    assert float(task.inputs.max()) <= 1.0 and len(task.train_idx) == 20
    with pytest.raises(InterplabError, match="labels in"):
        image_rule_task(images, lambda x: np.full(len(x), 2))
    with pytest.raises(InterplabError, match="uint8"):
        image_rule_task(images.astype(float), lambda x: np.zeros(len(x)))
