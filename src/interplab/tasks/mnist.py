"""MNIST from IDX files (gzip or raw), as uint8 images and labels.

Only the test set ships in ``../shared/data/mnist``; the training set is optional and
:func:`has_split` says whether it is there. Files are looked up as ``mnist/<name>`` and
``mnist/<name>.gz`` inside the data directory.

Example:
    >>> import gzip, os, tempfile, numpy as np
    >>> d = tempfile.mkdtemp(); os.makedirs(f"{d}/mnist")
    >>> imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    >>> write_idx(f"{d}/mnist/t10k-images-idx3-ubyte.gz", imgs)
    >>> write_idx(f"{d}/mnist/t10k-labels-idx1-ubyte", np.array([3, 7], dtype=np.uint8))
    >>> x, y = load_mnist("test", d)
    >>> x.shape, x.dtype, y.tolist()
    ((2, 28, 28), dtype('uint8'), [3, 7])
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from interplab import data
from interplab.errors import InterplabError, check
from interplab.io import PathLike, atomic_write_bytes

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MEAN, STD = 0.1307, 0.3081
"""The usual MNIST normalisation (pixel mean and standard deviation of the training set, on [0, 1])."""


def normalize(x: Any) -> Any:
    """``(x - MEAN) / STD`` for inputs on the [0, 1] pixel scale (tensor or array, any shape).

    Example:
        >>> round(float(normalize(0.1307 + 0.3081)), 6)
        1.0
    """
    return (x - MEAN) / STD


_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed if it starts with the gzip magic).

    Example: see the module docstring.
    """
    path = Path(path)
    check(path.is_file(), f"IDX file {path} does not exist.")
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        check(len(raw) >= 4 and raw[0] == 0 and raw[1] == 0, f"{path} is not an IDX file (bad magic number).")
        dtype, ndim = raw[2], raw[3]
        check(dtype in _DTYPES, f"{path} has an unknown IDX data type 0x{dtype:02x}.")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype], offset=4 + 4 * ndim)
        check(arr.size == int(np.prod(shape)), f"{path} is truncated: expected {int(np.prod(shape))} values.")
        return arr.reshape(shape).astype(np.dtype(_DTYPES[dtype]).newbyteorder("="))
    except (OSError, EOFError, struct.error, gzip.BadGzipFile) as e:
        raise InterplabError(f"{path} is corrupt ({e.__class__.__name__}).") from None


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip-compressed when the name ends in .gz).

    Example: see the module docstring.
    """
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    atomic_write_bytes(path, gzip.compress(payload) if str(path).endswith(".gz") else payload)


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / "mnist" / f"{name}.gz", root / "mnist" / name):
        if candidate.is_file():
            return candidate
    return None


def has_split(split: str, data_dir: Any = None) -> bool:
    """Whether the data directory holds both files of an MNIST split.

    Example:
        >>> import tempfile
        >>> has_split("train", tempfile.mkdtemp())
        False
    """
    root = data.data_dir(data_dir)
    return all(_find(root, n) is not None for n in FILES[split])


def load_mnist(split: str = "test", data_dir: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8 of ``split`` ("train" or "test").

    Example: see the module docstring.
    """
    check(split in FILES, f"MNIST split must be train or test, got {split!r}.")
    root = data.data_dir(data_dir)
    paths = [_find(root, n) for n in FILES[split]]
    if any(p is None for p in paths):
        note = " (only the test set ships with interplab's shared data)" if split == "train" else ""
        raise InterplabError(f"The MNIST {split} set is not in {root / 'mnist'}{note}.")
    images, labels = read_idx(paths[0]), read_idx(paths[1])  # type: ignore[arg-type]
    check(images.ndim == 3 and images.shape[1:] == (28, 28), f"MNIST {split} images have shape {images.shape}.")
    check(len(images) == len(labels), f"MNIST {split}: {len(images)} images but {len(labels)} labels.")
    return images, labels
