"""Image templates: decode a rendered digit back to 28x28, and score images against a template.

A *template* is a 28x28 uint8 image (the hint digit, its inverse, a feature visualization, the
mean of the inputs that push a direction hardest). An image's *similarity* to it is the dot
product of the image's pixels (scaled to [0, 1]) with the template's, optionally centered:
``"mean"`` subtracts the template's mean pixel, ``"mid"`` subtracts the middle of the pixel
range (0.5), which turns "similar to T" into "similar to T and unlike its inverse".

:func:`decode_rendered_digit` turns a published rendering of a 28x28 digit (e.g. a 213x214 RGBA
PNG drawn with nearest-neighbour upscaling and cropped a little) back into the digit: it finds
the pixel pitch from the block edges and samples each cell's centre.

Example:
    >>> import numpy as np
    >>> digit = np.zeros((28, 28), dtype=np.uint8); digit[5:23, 12:16] = 255
    >>> rendered = np.kron(digit, np.ones((7, 7), dtype=np.uint8))  # 196x196, pitch 7
    >>> bool((decode_rendered_digit(rendered) == digit).all())
    True
    >>> images = np.stack([digit, 255 - digit])
    >>> similarity(images, digit, center="mid").round(1).tolist()
    [36.0, -356.0]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interplab.errors import InterplabError, check
from interplab.io import PathLike

CENTERS = ("none", "mean", "mid")
SIDE = 28


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file (PNG, ...) as a grayscale float array in 0..255 (alpha over black).

    Example:
        >>> load_image("/nonexistent.png")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Hint image /nonexistent.png does not exist.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check(path.is_file(), f"Hint image {path} does not exist.")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGBA"), dtype=np.float64)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InterplabError(f"Hint image {path} is not a readable image ({e.__class__.__name__}).") from None
    return to_gray(arr)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grayscale 0..255 float from a gray, RGB or RGBA array (alpha composited over black).

    Example:
        >>> to_gray(np.array([[[255, 255, 255, 128]]], dtype=np.uint8)).round().tolist()
        [[128.0]]
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        return a
    check(a.ndim == 3 and a.shape[-1] in (1, 3, 4), f"An image must be HxW, HxWx3 or HxWx4, got {a.shape}.")
    gray = a[..., :3].mean(-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.shape[-1] == 4:
        gray = gray * a[..., 3] / 255.0
    return gray


def _edges(gray: np.ndarray, axis: int) -> np.ndarray:
    """Positions (in pixel-edge coordinates) where the rendering changes along ``axis``."""
    diff = np.abs(np.diff(gray, axis=axis)) > 1.0
    return np.nonzero(diff.any(axis=1 - axis))[0] + 1.0


def _fit_pitch(edges: np.ndarray, length: int, cells: int) -> float:
    """The cell pitch (pixels per cell) of a grid of ``cells`` centred on ``length`` pixels."""
    if len(edges) == 0:
        return length / cells
    centre = length / 2.0
    best, best_cost = length / cells, np.inf
    # the grid may be cropped or padded by up to ~15%; search pitches finely
    for pitch in np.linspace(length / (cells * 1.15), length / (cells * 0.85), 3001):
        k = (edges - centre) / pitch
        cost = np.abs(k - np.round(k)).mean()
        if cost < best_cost - 1e-9:
            best, best_cost = pitch, cost
    return float(best)


def decode_rendered_digit(image: np.ndarray, cells: int = SIDE) -> np.ndarray:
    """Turn a nearest-neighbour rendering of a ``cells`` x ``cells`` image back into uint8 pixels.

    The grid is assumed centred on the rendering (a symmetric crop or margin is fine); its
    pitch is fitted to the positions where the rendering's value changes. Cells outside the
    rendering are 0. Takes a 2D gray or an RGB(A) array; see :func:`load_image` for files.

    Example: see the module docstring.
    """
    gray = to_gray(image)
    check(min(gray.shape) >= cells, f"A rendering must be at least {cells}x{cells} pixels, got {gray.shape}.")
    h, w = gray.shape
    out = np.zeros((cells, cells), dtype=np.float64)
    pitch_r = _fit_pitch(_edges(gray, 0), h, cells)
    pitch_c = _fit_pitch(_edges(gray, 1), w, cells)
    centres_r = h / 2.0 + (np.arange(cells) - cells / 2 + 0.5) * pitch_r
    centres_c = w / 2.0 + (np.arange(cells) - cells / 2 + 0.5) * pitch_c
    rows, cols = np.floor(centres_r).astype(int), np.floor(centres_c).astype(int)
    ok_r, ok_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    out[np.ix_(ok_r, ok_c)] = gray[np.ix_(rows[ok_r], cols[ok_c])]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def to_template(image: np.ndarray) -> np.ndarray:
    """A 28x28 uint8 template from float pixels in [0, 1] (or uint8 passed through).

    Example:
        >>> to_template(np.full((28, 28), 0.5)).max()
        np.uint8(128)
    """
    a = np.asarray(image)
    check(a.shape == (SIDE, SIDE), f"A template must be {SIDE}x{SIDE}, got {a.shape}.")
    if a.dtype == np.uint8:
        return a.copy()
    return np.clip(np.round(np.asarray(a, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def template_weights(template: np.ndarray, center: str = "none") -> np.ndarray:
    """The 28x28 float weights a similarity score uses: template/255, centered as asked.

    Example:
        >>> template_weights(np.full((28, 28), 255, dtype=np.uint8), "mid")[0, 0]
        np.float64(0.5)
    """
    check(center in CENTERS, f"center must be one of {', '.join(CENTERS)}, got {center!r}.")
    t = np.asarray(template, dtype=np.float64) / 255.0
    if center == "mean":
        t = t - t.mean()
    elif center == "mid":
        t = t - 0.5
    return t


def similarity(images: np.ndarray, template: np.ndarray, center: str = "none") -> np.ndarray:
    """Dot product of each image (uint8 0..255, scaled to [0, 1]) with a template's weights.

    Example: see the module docstring.
    """
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1) / 255.0
    t = template_weights(template, center).reshape(-1)
    check(x.shape[1] == t.shape[0], f"Images have {x.shape[1]} pixels but the template has {t.shape[0]}.")
    return x @ t


__all__ = ["CENTERS", "load_image", "to_gray", "decode_rendered_digit", "to_template", "template_weights",
           "similarity"]
