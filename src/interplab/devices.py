"""Devices and dtypes: where a model lives and in what precision, chosen once and followed everywhere.

Every library function works on the device and dtype of the model (or tensors) it is given;
the helpers here name that place (:func:`model_device`, :func:`model_dtype`) and turn the
command line's ``--device auto|cpu|cuda|mps`` and ``--dtype float32|float64|bfloat16`` into
torch objects (:func:`resolve_device`, :func:`resolve_dtype`), refusing a device this machine
does not have with one sentence. :class:`Placement` is the dataclass the CLI options are
generated from and the run directory records (``config.json`` under ``placement``).

Random numbers are always drawn from CPU ``torch.Generator`` objects and then moved: the same
seed gives the same data order and initialisation on every device.

Example:
    >>> resolve_device("cpu"), resolve_dtype("bfloat16")
    (device(type='cpu'), torch.bfloat16)
    >>> m = torch.nn.Linear(2, 2).double()
    >>> model_device(m), model_dtype(m)
    (device(type='cpu'), torch.float64)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from interplab.errors import check

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def cuda_available() -> bool:
    """Whether a CUDA device can be used here."""
    return torch.cuda.is_available()


def mps_available() -> bool:
    """Whether an Apple MPS device can be used here."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda[:N]`` or ``mps``.

    Raises :class:`~interplab.errors.InterplabError` for an unknown name or a device this
    machine does not have.

    Example:
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: device must be one of auto, cpu, cuda, mps, got 'gpu'.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name).strip().lower()
    kind = name.split(":")[0]
    check(kind in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {name!r}.")
    if kind == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if kind == "cuda":
        check(cuda_available(), f"Device {name} was asked for, but this machine has no CUDA GPU; use --device cpu or auto.")
        index = int(name.split(":")[1]) if ":" in name else 0
        check(index < torch.cuda.device_count(), f"Device {name} does not exist; this machine has "
              f"{torch.cuda.device_count()} CUDA device(s).")
    if kind == "mps":
        check(mps_available(), f"Device {name} was asked for, but this machine has no MPS device; use --device cpu or auto.")
    return torch.device(name)


def resolve_dtype(name: str | torch.dtype | None = "float32") -> torch.dtype:
    """The floating-point torch dtype for ``float32``, ``float64`` or ``bfloat16``.

    Example:
        >>> resolve_dtype("float16")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: dtype must be one of float32, float64, bfloat16, got 'float16'.
    """
    if isinstance(name, torch.dtype):
        check(name in DTYPES.values(), f"dtype must be one of {', '.join(DTYPES)}, got {name}.")
        return name
    name = "float32" if name is None else str(name).strip().lower()
    check(name in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype as the CLI and config.json spell it.

    Example:
        >>> dtype_name(torch.float64)
        'float64'
    """
    return str(dtype).removeprefix("torch.")


def model_device(model: torch.nn.Module | torch.Tensor) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with neither), or of a tensor.

    Example:
        >>> model_device(torch.zeros(2))
        device(type='cpu')
    """
    if isinstance(model, torch.Tensor):
        return model.device
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of a model's first floating-point parameter (float32 for a model with none).

    Example:
        >>> model_dtype(torch.nn.Linear(1, 1).to(torch.bfloat16))
        torch.bfloat16
    """
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def to_model(x: Any, model: torch.nn.Module) -> Any:
    """``x`` on the model's device; floating-point ``x`` also in the model's dtype (ints stay ints).

    Example:
        >>> to_model(torch.ones(2), torch.nn.Linear(2, 1).double()).dtype
        torch.float64
    """
    if not isinstance(x, torch.Tensor):
        return x
    if x.is_floating_point():
        return x.to(device=model_device(model), dtype=model_dtype(model))
    return x.to(model_device(model))


def to_device(x: Any, device: torch.device) -> Any:
    """``x`` moved to ``device`` when it is a tensor; anything else (a list of prompts) unchanged.

    Example:
        >>> to_device(torch.ones(1), torch.device("cpu")).device, to_device(["a prompt"], torch.device("cpu"))
        (device(type='cpu'), ['a prompt'])
    """
    return x.to(device) if isinstance(x, torch.Tensor) else x


def to_host(x: Any) -> Any:
    """``x`` with every tensor in it (also inside dicts, lists, tuples and dataclasses) on the CPU,
    half-precision ones in float32 (numpy has no bfloat16): what numpy, plots and reports need from
    results computed on any device.

    Example:
        >>> r = to_host({"effect": [torch.ones(2, dtype=torch.bfloat16)], "n": 3})
        >>> r["effect"][0].dtype, r["n"]
        (torch.float32, 3)
    """
    if isinstance(x, torch.Tensor):
        half = x.dtype in (torch.bfloat16, torch.float16)
        return x.detach().to(device="cpu", dtype=torch.float32 if half else x.dtype)
    if isinstance(x, dict):
        return {k: to_host(v) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):  # results such as a fitted PCA or rule
        return dataclasses.replace(x, **{f.name: to_host(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init})
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(to_host(v) for v in x)
    return x


@dataclass(frozen=True)
class Placement:
    """Where a command runs its model: the ``--device`` and ``--dtype`` options of every command
    that runs one (generated from these fields) and what ``config.json`` records.

    Raises :class:`~interplab.errors.InterplabError` when it is made for an unknown device or
    dtype, or for a device this machine lacks (so a command refuses it before any work).

    Example:
        >>> p = Placement(device="cpu", dtype="float64")
        >>> p.torch_device, p.torch_dtype
        (device(type='cpu'), torch.float64)
    """

    device: str = field(default="auto", metadata={"help": "Device: auto (CUDA when present, else CPU), cpu, cuda or mps."})
    dtype: str = field(default="float32", metadata={"help": "Floating-point dtype of the model: float32, float64 or bfloat16."})

    def __post_init__(self) -> None:
        check(self.device.split(":")[0].lower() in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}.")
        check(self.dtype.lower() in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        resolve_device(self.device)  # a device this machine lacks is refused here, with one sentence

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (raises if this machine lacks it)."""
        return resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype."""
        return resolve_dtype(self.dtype)

    def record(self) -> dict[str, str]:
        """What ``config.json`` stores: the device actually used and the dtype.

        Example:
            >>> Placement("cpu").record()
            {'device': 'cpu', 'dtype': 'float32'}
        """
        return {"device": str(self.torch_device), "dtype": self.dtype.lower()}

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to this device and dtype (in place; returned for chaining)."""
        return model.to(device=self.torch_device, dtype=self.torch_dtype)


__all__ = ["DEVICES", "DTYPES", "Placement", "cuda_available", "mps_available", "resolve_device", "resolve_dtype",
           "dtype_name", "model_device", "model_dtype", "to_model", "to_device", "to_host"]
