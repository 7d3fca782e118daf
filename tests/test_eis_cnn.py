"""The eis-cnn study: the family test (a CNN trained under a hidden rule the test defines, whose
rule the study must recover from the network alone), a check on the real challenge network's
hint, and the command line's one-sentence errors."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interplab import data
from interplab.analysis.templates import decode_rendered_digit, load_image, similarity
from interplab.errors import InterplabError
from interplab.models import ConvNet, ConvNetConfig
from interplab.tasks.image_rule import image_rule_task
from test_templates import render
from interplab.tasks.mnist import load_mnist, write_idx
from interplab.train import TrainConfig, train


def shared_dir():
    try:
        root = data.data_dir()
    except InterplabError:
        return None
    return root if (root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file() else None


needs_data = pytest.mark.skipif(shared_dir() is None, reason="the shared MNIST test set is not available")


def render_hint(digit: np.ndarray, path, pitch: float = 7.78, size=(214, 213)) -> None:
    """Draw a 28x28 digit as the challenge did: nearest-neighbour upscaling, centred crop, RGBA PNG."""
    from PIL import Image

    img = render(digit, pitch, size)
    Image.fromarray(np.dstack([img] * 3 + [np.full(size, 255, np.uint8)]), "RGBA").save(path)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A small CNN trained on 5000 MNIST test images under a hidden band rule on a '0' template."""
    images, digits = load_mnist("test", shared_dir())
    images = images[:5000]
    template = images[int(np.nonzero(digits[:5000] == 0)[0][3])]
    s = similarity(images, template, "mid")
    lo, hi = np.quantile(s, [0.45, 0.9])

    def hidden(x):
        sx = similarity(x, template, "mid")
        return ((sx >= lo) & (sx <= hi)).astype(int)

    task = image_rule_task(images, hidden, frac_train=0.9, seed=0,
                           model=ConvNetConfig(channels1=4, channels2=8, d_fc=32))
    net = ConvNet(task.default_model_config(), seed=0)
    torch.set_num_threads(1)
    train(net, task, TrainConfig(epochs=8, lr=3e-3, weight_decay=0.0, batch_size=64, log_every=8), quiet=True)
    root = tmp_path_factory.mktemp("family")
    (root / "mnist").mkdir()
    # a training split too, so the study fits the rule on it and checks it on the test split
    write_idx(root / "mnist" / "train-images-idx3-ubyte.gz", images)
    write_idx(root / "mnist" / "train-labels-idx1-ubyte.gz", digits[:5000])
    write_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz", images[-1000:])
    write_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", digits[4000:5000])
    torch.save(net.state_dict(), root / "model.pt")
    render_hint(template, root / "hint.png")
    return {"root": root, "images": images, "hidden": hidden, "net": net, "template": template}


@needs_data
def test_study_recovers_a_hidden_rule_of_the_same_family(family, tmp_path):
    from interplab.studies.eis_cnn import run

    root = family["root"]
    results = run(tmp_path / "out", data_dir=root, model_path=root / "model.pt", hint_path=root / "hint.png",
                  n_draws=1, featviz_steps=16, tolerances=(0.001, 0.01, 0.1), quiet=True)
    images = family["images"]
    ns = {}
    exec(results["rule_source"], ns)
    recovered = np.asarray(ns["rule"](images))
    assert recovered.shape == (len(images),) and set(np.unique(recovered)) <= {0, 1}
    truth = family["hidden"](images)
    print(f"family: recovered rule vs hidden rule {(recovered == truth).mean():.4f}, vs network "
          f"{results['rule_agree']:.4f}; {results['rule_description']}")
    assert (recovered == truth).mean() >= 0.93
    with torch.no_grad():
        net_labels = family["net"](torch.as_tensor(images).float() / 255).argmax(-1).numpy()
    assert results["used_train_set"] and results["n_fit_images"] == 5000 and results["n_test_images"] == 1000
    assert results["rule_agree"] == pytest.approx((recovered == net_labels).mean())
    assert results["model_test_acc_vs_rule"] == pytest.approx((recovered == net_labels)[-1000:].mean())
    assert results["rule_agree"] >= 0.88
    assert results["n_units_group_a"] + results["n_units_group_b"] + results["n_units_other"] + \
        results["n_units_dead"] == 32
    for key in ("model_test_acc_vs_rule", "pca_var_explained_2", "min_ablate_own_region_agree_a",
                "min_ablate_other_region_agree_a", "min_ablate_own_region_agree_b", "min_ablate_other_region_agree_b",
                "scrub_agree_at_1pct"):
        assert 0.0 <= results[key] <= 1.0, key
    assert sorted(results["scrub_curve"]) == ["0.001", "0.01", "0.1"]
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["rule_source"] == results["rule_source"]
    assert "Causal scrubbing" in (tmp_path / "out" / "report.html").read_text()


@needs_data
def test_real_hint_decodes_and_explains_the_real_network():
    """The published network and hint (no template typed in): the hint's mid-centered score explains it."""
    from interplab.analysis.rules import search_rules

    root = shared_dir()
    hint = decode_rendered_digit(load_image(root / "eis-vii" / "mnist_example.png"))
    assert hint.shape == (28, 28) and hint.max() > 200 and (hint > 0).sum() < 200
    net = ConvNet.from_file(root / "eis-vii" / "mnist_model.pt")
    images = load_mnist("test", root)[0][:3000]
    with torch.no_grad():
        labels = net(torch.as_tensor(images).float() / 255).argmax(-1).numpy()
    best = search_rules(images, labels, {"hint": hint, "hint inverse": 255 - hint})[0]
    assert best.agree >= 0.95 and best.kind == "two-sided"


def test_cli_errors_are_one_sentence(tmp_path):
    from interplab.cli import _register, app

    _register()
    runner = CliRunner()
    res = runner.invoke(app, ["study", "eis-cnn", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, InterplabError)
    assert str(res.exception) == f"Data directory {tmp_path / 'missing'} does not exist."
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    res = runner.invoke(app, ["study", "eis-cnn", "--data-dir", str(tmp_path), "--model", str(bad),
                              "--hint", str(bad), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, InterplabError) and "is corrupt" in str(res.exception)


def test_cli_exit_code_2(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-c", "from interplab.cli import main; main()", "study", "eis-cnn",
                           "--data-dir", str(tmp_path), "--model", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Model file") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
