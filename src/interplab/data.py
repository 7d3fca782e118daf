"""The data directory, downloads with checksums, and safe loading of published pickles.

Where data comes from, in order: an explicit ``--data-dir``, the ``INTERPLAB_DATA``
environment variable, then ``../shared/data`` beside the checkout (or beside the current
directory) when it exists. Files the project did not make are never committed; the ones it
knows are listed in :data:`KNOWN_FILES` with their md5 and public homes, and
:func:`download` fetches and verifies them with pooch.

Published ``.pkl`` tables can run code when unpickled, so :func:`load_numpy_pickle` reads
them with an unpickler that admits numpy arrays and plain containers, nothing else.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> data_dir(d) == __import__("pathlib").Path(d)
    True
    >>> data_dir("/no/such/dir")
    Traceback (most recent call last):
    ...
    interplab.errors.InterplabError: Data directory /no/such/dir does not exist.
"""

from __future__ import annotations

import io
import os
import pickle
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interplab.errors import InterplabError, check
from interplab.io import PathLike, atomic_write_bytes

ENV_VAR = "INTERPLAB_DATA"


@dataclass(frozen=True)
class KnownFile:
    """A published file: its path inside the data directory, md5, and where it lives."""

    path: str
    md5: str
    urls: tuple[str, ...]
    what: str


_CHALLENGE = "https://raw.githubusercontent.com/thestephencasper/mechanistic_interpretability_challenge/main/"
_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")

KNOWN_FILES: dict[str, KnownFile] = {
    f.path: f
    for f in [
        KnownFile("eis-vii/mnist_model.pt", "470a4cdc20ce19ac64a4922ac101597e",
                  (_CHALLENGE + "mnist_model.pt",), "the EIS VII challenge 1 CNN"),
        KnownFile("eis-vii/mnist_example.png", "5472a80f8efa290517b7733940dbb36c",
                  (_CHALLENGE + "figs/mnist_example.png",), "the EIS VII challenge 1 hint image"),
        KnownFile("eis-vii/transformer_label_info.pkl", "287c107e12b838615ac0599260823514",
                  (_CHALLENGE + "transformer_label_info.pkl",), "the EIS VII challenge 2 label tables"),
        KnownFile("mnist/t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                  tuple(u + "t10k-images-idx3-ubyte.gz" for u in _MNIST), "the MNIST test images"),
        KnownFile("mnist/t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                  tuple(u + "t10k-labels-idx1-ubyte.gz" for u in _MNIST), "the MNIST test labels"),
        KnownFile("mnist/train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                  tuple(u + "train-images-idx3-ubyte.gz" for u in _MNIST), "the MNIST training images"),
        KnownFile("mnist/train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                  tuple(u + "train-labels-idx1-ubyte.gz" for u in _MNIST), "the MNIST training labels"),
    ]
}


def default_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout or the working directory, if it exists.

    Example:
        >>> d = default_data_dir()
        >>> d is None or d.is_dir()
        True
    """
    checkout = Path(__file__).resolve().parents[2]  # src/interplab/data.py -> checkout root
    for base in (checkout, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def data_dir(explicit: PathLike | None = None) -> Path:
    """The data directory: ``explicit``, else ``$INTERPLAB_DATA``, else the default.

    Raises :class:`InterplabError` when the chosen directory does not exist or none is found.

    Example: see the module docstring.
    """
    if explicit is not None:
        path = Path(explicit)
        check(path.is_dir(), f"Data directory {path} does not exist.")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        check(path.is_dir(), f"Data directory {path} (from ${ENV_VAR}) does not exist.")
        return path
    found = default_data_dir()
    check(found is not None, f"No data directory found: pass --data-dir or set ${ENV_VAR}.")
    assert found is not None
    return found


def data_file(relpath: str, explicit_dir: PathLike | None = None) -> Path:
    """Path of ``relpath`` inside the data directory, with a clear error if it is missing.

    Example:
        >>> import tempfile
        >>> data_file("eis-vii/mnist_model.pt", tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: ... is missing from the data directory ... (download it with interplab.data.download).
    """
    root = data_dir(explicit_dir)
    path = root / relpath
    if not path.is_file():
        what = KNOWN_FILES[relpath].what if relpath in KNOWN_FILES else relpath
        raise InterplabError(
            f"{what.capitalize()} ({relpath}) is missing from the data directory {root} "
            "(download it with interplab.data.download)."
        )
    return path


def md5sum(path: PathLike) -> str:
    """The md5 hex digest of a file.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x"); _ = open(p, "wb").write(b"abc")
        >>> md5sum(p)
        '900150983cd24fb0d6963f7d28e17f72'
    """
    import pooch

    return pooch.file_hash(str(path), alg="md5")


def fetch(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (http, https or file), or a one-sentence error.

    Example:
        >>> fetch("http://127.0.0.1:9/nothing", timeout=2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Could not fetch http://127.0.0.1:9/nothing (...).
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise InterplabError(f"Could not fetch {url} ({getattr(e, 'reason', e)}).") from None


def download(
    relpath: str,
    dest_dir: PathLike,
    urls: tuple[str, ...] | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch a known file into ``dest_dir/relpath`` with pooch, verifying its md5, trying each URL in turn.

    ``urls``/``md5`` default to the entry in :data:`KNOWN_FILES`. An existing file with the
    right checksum is kept; a bad download is never left on disk.

    Example:
        >>> import tempfile
        >>> download("not/known.bin", tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: No known source for not/known.bin; pass urls and md5.
    """
    known = KNOWN_FILES.get(relpath)
    if urls is None or md5 is None:
        check(known is not None, f"No known source for {relpath}; pass urls and md5.")
        assert known is not None
        urls = urls or known.urls
        md5 = md5 or known.md5
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")
    dest = Path(dest_dir) / relpath
    errors = []
    for url in urls:  # pooch keeps a file with the right hash, verifies a download, and never leaves a bad one
        try:
            return Path(pooch.retrieve(url, known_hash=f"md5:{md5}", fname=dest.name, path=dest.parent,
                                       progressbar=False, downloader=pooch.HTTPDownloader(timeout=timeout)
                                       if url.startswith("http") else None))
        except ValueError as e:  # pooch's hash mismatch
            errors.append(f"{url}: md5 mismatch ({' '.join(str(e).split())[:120]})")
        except (requests.exceptions.RequestException, OSError) as e:
            errors.append(f"{url}: {type(e).__name__}")
    raise InterplabError(f"Could not download {relpath} ({'; '.join(errors)}).")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays (and the dtype objects they need); refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        import numpy as np

        if name == "_reconstruct":
            return np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
        return getattr(np, name)


def load_numpy_pickle(path: PathLike | bytes, name: str | None = None) -> Any:
    """Unpickle a file (or its bytes) that may hold only numpy arrays inside dicts, lists, tuples.

    Anything else (a class, a function, ``os.system``) is refused before it can run, with
    a one-sentence :class:`InterplabError`.

    Example:
        >>> import pickle, tempfile, os, numpy as np
        >>> p = os.path.join(tempfile.mkdtemp(), "t.pkl")
        >>> pickle.dump({"labels": np.eye(2)}, open(p, "wb"))
        >>> load_numpy_pickle(p)["labels"].shape
        (2, 2)
        >>> pickle.dump({"x": print}, open(p, "wb"))
        >>> load_numpy_pickle(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: ... is not a numpy-only pickle (refused to load builtins.print).
    """
    if isinstance(path, bytes):
        payload, path = path, Path(name or "<bytes>")
    else:
        path = Path(path)
        check(path.is_file(), f"File {path} does not exist.")
        payload = path.read_bytes()
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    except pickle.UnpicklingError as e:
        raise InterplabError(f"File {path} is not a numpy-only pickle ({e}).") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise InterplabError(f"File {path} is a malformed pickle ({e.__class__.__name__}).") from None
