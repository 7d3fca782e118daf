import numpy as np
import pytest

from interplab.analysis.templates import decode_rendered_digit, load_image, similarity, template_weights, to_template
from interplab.errors import InterplabError


def render(digit: np.ndarray, pitch: float, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour rendering of a 28x28 digit at ``pitch`` px/cell, centred and cropped to ``size``."""
    h, w = size
    rows = np.floor((np.arange(h) + 0.5 - h / 2) / pitch + 14).astype(int)
    cols = np.floor((np.arange(w) + 0.5 - w / 2) / pitch + 14).astype(int)
    out = np.zeros((h, w), dtype=np.uint8)
    ok_r, ok_c = (rows >= 0) & (rows < 28), (cols >= 0) & (cols < 28)
    out[np.ix_(ok_r, ok_c)] = digit[np.ix_(rows[ok_r], cols[ok_c])]
    return out


def random_digit(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = np.zeros((28, 28), dtype=np.uint8)
    d[4:24, 6:22] = rng.integers(0, 256, size=(20, 16))
    return d


@pytest.mark.parametrize("pitch,size", [(7.78, (214, 213)), (7.0, (196, 196)), (8.3, (240, 232)), (1.0, (28, 28))])
def test_decode_recovers_the_digit_from_a_cropped_rendering(pitch, size):
    digit = random_digit(1)
    rendered = render(digit, pitch, size)
    rgba = np.dstack([rendered] * 3 + [np.full(size, 255, np.uint8)])
    assert (decode_rendered_digit(rgba) == digit).all()


def test_load_image_reads_png_and_refuses_garbage(tmp_path):
    from PIL import Image

    digit = random_digit(2)
    rendered = render(digit, 7.78, (214, 213))
    path = tmp_path / "hint.png"
    Image.fromarray(np.dstack([rendered] * 3 + [np.full(rendered.shape, 255, np.uint8)]), "RGBA").save(path)
    assert (decode_rendered_digit(load_image(path)) == digit).all()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InterplabError, match="not a readable image"):
        load_image(bad)


def test_similarity_centerings():
    t = np.zeros((28, 28), dtype=np.uint8)
    t[:, :7] = 255  # a quarter of the pixels on
    img = np.full((1, 28, 28), 255, dtype=np.uint8)
    assert similarity(img, t, "none")[0] == pytest.approx(196.0)
    assert similarity(img, t, "mean")[0] == pytest.approx(0.0, abs=1e-9)
    assert similarity(img, t, "mid")[0] == pytest.approx(196 * 0.5 - 588 * 0.5)
    # mid-centering makes the template and its inverse give opposite scores
    assert similarity(img, 255 - t, "mid")[0] == pytest.approx(-similarity(img, t, "mid")[0])
    assert template_weights(t, "mid").sum() == pytest.approx(-196.0)
    assert to_template(np.full((28, 28), 2.0)).max() == 255
