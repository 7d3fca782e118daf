"""Low-level files: atomic writes, JSON, results, tensors and safe torch loading.

Every write goes to a temporary file in the same directory and is renamed into place, so an
interrupted process never leaves half a file. Reads of missing or corrupt files raise a
one-sentence :class:`~interplab.errors.InterplabError`. This module imports nothing of
interplab but :mod:`interplab.errors`, so every layer may use it; run directories (a model's
config and weights) are :mod:`interplab.runs`.

Example:
    >>> import tempfile, os, torch
    >>> d = tempfile.mkdtemp()
    >>> save_tensors(os.path.join(d, "w.safetensors"), {"w": torch.ones(2)})
    >>> load_tensors(os.path.join(d, "w.safetensors"))["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from interplab.errors import InterplabError, check

PathLike = str | os.PathLike[str]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> atomic_write_bytes(p, b"hi"); open(p, "rb").read()
        b'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically; see :func:`atomic_write_bytes`.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.txt")
        >>> atomic_write_text(p, "hello"); open(p).read()
        'hello'
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.tolist())
    if hasattr(x, "item") and hasattr(x, "dtype"):  # numpy scalar
        return x.item()
    if hasattr(x, "tolist"):  # numpy array
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; tensors and numpy values become lists.

    Example:
        >>> import tempfile, os, json
        >>> p = os.path.join(tempfile.mkdtemp(), "r.json")
        >>> atomic_write_json(p, {"acc": 0.5}); json.load(open(p))
        {'acc': 0.5}
    """
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def read_json(path: PathLike) -> Any:
    """Read a JSON file, raising :class:`InterplabError` if it is missing or corrupt.

    Example:
        >>> read_json("/nonexistent/config.json")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: File /nonexistent/config.json does not exist.
    """
    path = Path(path)
    check(path.is_file(), f"File {path} does not exist.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterplabError(f"File {path} is not valid JSON ({e.__class__.__name__}).") from None


def write_results(out_dir: PathLike, results: dict[str, Any]) -> Path:
    """Write a study's flat ``results.json`` (keys to numbers, strings or plain lists/dicts).

    Example:
        >>> import tempfile
        >>> p = write_results(tempfile.mkdtemp(), {"acc": 1.0})
        >>> p.name
        'results.json'
    """
    for k in results:
        check(isinstance(k, str) and "." not in k, f"Result key {k!r} must be a flat string.")
    path = Path(out_dir) / "results.json"
    atomic_write_json(path, results)
    return path


def save_tensors(path: PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Save a dict of tensors as safetensors, atomically.

    Example:
        >>> import tempfile, os, torch
        >>> p = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> save_tensors(p, {"w": torch.ones(2)}); sorted(load_tensors(p))
        ['w']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file, raising :class:`InterplabError` if missing or corrupt.

    Example:
        >>> load_tensors("/nonexistent.safetensors")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Weights file /nonexistent.safetensors does not exist.
    """
    path = Path(path)
    check(path.is_file(), f"Weights file {path} does not exist.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InterplabError(f"Weights file {path} is corrupt or not a safetensors file ({e}).") from None


def save_torch(path: PathLike, obj: Any) -> None:
    """``torch.save`` of tensors and plain containers, written atomically (see :func:`load_torch`).

    Example:
        >>> import tempfile, os, torch
        >>> p = os.path.join(tempfile.mkdtemp(), "state.pt")
        >>> save_torch(p, {"epoch": 3, "w": torch.ones(2)}); load_torch(p)["epoch"]
        3
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: PathLike, what: str = "File") -> Any:
    """``torch.load`` that unpickles tensors and plain containers only, on the CPU.

    Missing or corrupt files raise a one-sentence :class:`InterplabError` naming ``what``.

    Example:
        >>> load_torch("/nonexistent/state.pt", "Checkpoint")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Checkpoint /nonexistent/state.pt does not exist.
    """
    path = Path(path)
    check(path.is_file(), f"{what} {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many exception types on a corrupt file
        # torch's own messages for garbage input talk about weights_only defaults: name the error only
        raise InterplabError(f"{what} {path} is corrupt or not a PyTorch file ({e.__class__.__name__}).") from None


def load_state_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: PathLike) -> None:
    """Copy ``tensors`` into ``model``, with one-sentence errors for missing keys or shapes.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> load_state_into(lin, {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, "x")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Weights in x do not fit the model: weight has shape (3, 2), the model expects (2, 2).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    check(not missing, f"Weights in {source} lack {', '.join(missing[:5])} that the model needs.")
    check(not unexpected, f"Weights in {source} hold {', '.join(unexpected[:5])} that the model does not have.")
    for k, v in tensors.items():
        check(
            tuple(v.shape) == tuple(own[k].shape),
            f"Weights in {source} do not fit the model: {k} has shape {tuple(v.shape)}, "
            f"the model expects {tuple(own[k].shape)}.",
        )
    model.load_state_dict(tensors)
