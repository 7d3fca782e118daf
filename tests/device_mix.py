"""A CPU-only detector of device mixing: what would fail on a GPU, caught on a machine without one.

On a CPU-only machine every tensor is on the CPU, so an op that mixes "the model's device" with
"the host" runs fine here and fails only on CUDA. :class:`DeviceMixDetector` is a
``torch.overrides.TorchFunctionMode`` that keeps a second, imaginary placement for every tensor:

- *device*: the parameters and buffers of a model moved with ``model.to(d)`` (``Placement.apply``), anything moved with ``.to(d)`` / ``.cuda()`` or
  created with ``device=d`` where ``d`` was read from a device-tagged tensor (``x.device``,
  ``model_device(model)``) or resolved by ``interplab.devices.resolve_device`` (``--device``), and
  the result of any op with a device-tagged input;
- *host*: everything else (tensors created without a device, ``.cpu()``, ``devices.to_host``,
  ``.to("cpu")``).

An op whose tensor inputs include both a device tensor and a host tensor with at least one
dimension, or a CPU-only op (``.numpy()``, ``torch.histogram``) given a device tensor, raises
``DeviceMixError`` naming the op (0-dim host tensors are allowed, as CUDA allows
them; so is indexing a device tensor with host indices, and copying between the two). It
reports mixes that CUDA refuses; it can be fooled by a device rebuilt from a string
(``torch.device(str(d))``), which it counts as the host, and by code that skips a move when the
devices compare equal (always true on the CPU): ``Task.to``'s shortcut is bypassed here. A move
that returns its input unchanged (``x.to(d)`` with ``x`` already there) gives a tagged alias, so
the input keeps its own tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

_DEVICE_GET = torch.Tensor.device.__get__
_TRANSFER = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu, torch.Tensor.type}
# ops that accept a host tensor next to a device one (copies, index with host indices) or read no data
_ALLOWED = {torch.Tensor.copy_, torch.Tensor.__getitem__, torch.Tensor.set_, torch.Tensor.__setitem__,
            torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__repr__,
            torch.Tensor.__format__, torch.Tensor.size, torch.Tensor.dim, torch.Tensor.__len__,
            torch.Tensor.data.__set__, torch.Tensor.grad.__set__, torch.Tensor.requires_grad_,
            torch.Tensor.detach, torch._has_compatible_shallow_copy_type, torch.Tensor.share_memory_}


# ops that only run on the CPU: given a device tensor they fail on a GPU
_HOST_ONLY = {torch.Tensor.numpy, torch.Tensor.__array__, torch.histogram, torch.Tensor.histogram, torch.histogramdd}


class DeviceMixError(RuntimeError):
    """An op that mixes a device tensor and a host tensor (CUDA would refuse it)."""


class DeviceMixDetector(TorchFunctionMode):
    """Tag tensors as on the model's device or on the host and fail on an op that mixes them."""

    def __init__(self) -> None:
        super().__init__()
        self._devices: dict[int, torch.device] = {}  # id -> the device object (kept alive so ids stay unique)

    def device_object(self, d: torch.device) -> torch.device:
        """Register ``d`` as the model's device (its identity, not its value, marks it)."""
        self._devices[id(d)] = d
        return d

    def _is_dev_device(self, d: Any) -> bool:
        if isinstance(d, torch.device):
            return id(d) in self._devices or d.type != "cpu"
        if isinstance(d, str):
            return not d.startswith("cpu")
        return False

    @staticmethod
    def on_device(t: Any) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        return getattr(t, "_mix_dev", False)  # a model's parameters: tagged when it moves (nn.Module.to below)

    def _target(self, func: Any, args: tuple, kwargs: dict) -> bool | None:
        """For a transfer or a factory given ``device=``: whether the result is on the device (None: follow inputs)."""
        if "device" in kwargs and kwargs["device"] is not None:
            return self._is_dev_device(kwargs["device"])
        if func is torch.Tensor.cpu:
            return False
        if func is torch.Tensor.cuda:
            return True
        if func is torch.Tensor.to:
            for a in args[1:]:
                if isinstance(a, (torch.device, str)):
                    return self._is_dev_device(a)
                if isinstance(a, torch.Tensor):
                    return self.on_device(a)
            if isinstance(kwargs.get("other"), torch.Tensor):
                return self.on_device(kwargs["other"])
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func == _DEVICE_GET:
            if self.on_device(args[0]):
                self.device_object(out)
            return out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        any_dev = any(self.on_device(t) for t in tensors)
        if func in _HOST_ONLY and any_dev:
            raise DeviceMixError(f"{getattr(func, '__name__', func)} runs on the CPU only, given a device tensor")
        target = self._target(func, args, kwargs)
        if target is None and func not in _TRANSFER and func not in _ALLOWED and any_dev:
            host = [t for t in tensors if not self.on_device(t) and t.dim() > 0]
            if host:
                name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
                raise DeviceMixError(f"{name} mixes device tensors with host tensor(s) of shape "
                                     f"{[tuple(t.shape) for t in host]}")
        if target is True and kwargs.get("generator") is not None:
            raise DeviceMixError(f"{getattr(func, '__name__', func)} draws on the device from a CPU generator")
        dev = any_dev if target is None else target
        if func is torch.Tensor.__getitem__:
            dev = self.on_device(args[0])
        if (target is not None and isinstance(out, torch.Tensor) and not isinstance(out, torch.nn.Parameter)
                and any(out is t for t in tensors) and self.on_device(out) != target):
            out = out.view_as(out)  # on the CPU a move to "the device" returns its input: tag a new alias, not the input

        def tag(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
                try:
                    t._mix_dev = dev
                except (AttributeError, RuntimeError):
                    pass
            return t

        tree_map(tag, out)
        return out


@contextlib.contextmanager
def detect_device_mixing(monkeypatch: Any) -> Iterator[DeviceMixDetector]:
    """Run the block under a :class:`DeviceMixDetector`; ``--device`` resolved inside counts as the device."""
    import importlib

    import interplab.devices as devices

    mode = DeviceMixDetector()
    for name in ("interplab.devices", "interplab.tasks", "interplab.runs", "interplab.sae.buffer", "interplab.train",
                 "interplab.lm.load"):  # every module holding a resolve_device (lm.load has its own)
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "resolve_device",
                            lambda d="auto", real=module.resolve_device: mode.device_object(real(d)))
    from interplab.tasks import Task

    def task_to(self: Task, device: Any) -> Task:  # Task.to without its same-device shortcut (always taken on the CPU)
        dev = devices.resolve_device(device)
        extras = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in self.extras.items()}
        return dataclasses.replace(self, inputs=self.inputs.to(dev), labels=self.labels.to(dev),
                                   train_idx=self.train_idx.to(dev), test_idx=self.test_idx.to(dev), extras=extras)

    monkeypatch.setattr(Task, "to", task_to)
    module_to = torch.nn.Module.to

    def model_to(self: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:  # tag where a model moves
        out = module_to(self, *args, **kwargs)
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            on_dev = mode._is_dev_device(device) or any(id(a) in mode._devices for a in [*args, *kwargs.values()])
            for t in [*self.parameters(), *self.buffers()]:
                t._mix_dev = on_dev
        return out

    monkeypatch.setattr(torch.nn.Module, "to", model_to)
    lm_load = importlib.import_module("interplab.lm.load")  # (interplab.lm.load is also a function)

    real_load = lm_load.load

    def load(*args: Any, **kwargs: Any) -> Any:  # TransformerLens boots a bridge with device strings: load unwatched
        with torch._C.DisableTorchFunction():
            loaded = real_load(*args, **kwargs)
        for t in [*loaded.model.parameters(), *loaded.model.buffers()]:
            t._mix_dev = True
        return loaded

    monkeypatch.setattr(lm_load, "load", load)
    with mode:
        yield mode
