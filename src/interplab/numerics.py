"""Numerics of long loops, in one place: subnormal flushing and deterministic algorithms.

Every training loop (:func:`interplab.train.train`, :func:`interplab.sae.train.train_sae`)
and every study runs inside ``with numerics():``, which sets two things for its duration:

- **Subnormal floats are flushed to zero** (``torch.set_flush_denormal(True)``; on x86 the
  FTZ/DAZ bits). Late in training the model is so confident that the wrong class's
  probability falls below 1.2e-38, the smallest normal float32 (log-probability below
  -87.3), and the backward pass carries subnormal numbers: at epoch 1500 of the EIS VII
  challenge 2 training (loss 5.7e-5) 2.3 million of them, 1.5% to 10% of the gradients at
  each activation site, none in Adam's moments (``bench/subnormals.py`` counts them per
  tensor). CPUs with a subnormal penalty (Intel x86) take a slow microcode path on them; the
  issue that introduced flushing measured 7.5 -> 1.1 epochs/s there. CPUs without one (AMD
  EPYC, the shared development machine) run them at full speed, so flushing changes nothing
  in time (``bench/subnormals.py`` measures the ratio and times kernels on subnormal
  operands). Flushing changes only values below 1.2e-38 (they become 0); weights, losses and
  accuracies agree with the unflushed run to every digit the studies report (largest weight
  difference after 20 epochs 3e-31, printed by ``bench/subnormals.py``).
- **Deterministic algorithms** (``torch.use_deterministic_algorithms(True, warn_only=True)``).
  On the CPU with several threads, the backward pass of advanced indexing (``W_E[tokens]``,
  i.e. ``index_put_(..., accumulate=True)``) adds the rows of repeated indices in an order that
  depends on thread scheduling (measured: gradients of the same batch differ by up to 2e-5
  between calls with 2 threads; ``F.embedding`` and ``index_select`` do not), so two runs
  with the same seed drift apart (0.0013 in the weights after 40 epochs of challenge 2).
  Deterministic mode takes a sorted, fixed-order path; with it the weights are bitwise equal
  at 1 and 2 threads. On CUDA it also selects deterministic cuBLAS/cuDNN kernels and sets
  ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when absent; an operation without a deterministic
  kernel warns instead of failing. ``bench/determinism.py`` measures the cost.

The defaults are on. Turn either off for a process with the environment variables
``INTERPLAB_FLUSH_DENORMAL=0`` and ``INTERPLAB_DETERMINISTIC=0`` (or the CLI's
``--no-flush-denormal`` and ``--fast`` options, which set them), or for one block of code with
``numerics(flush_denormal=False)`` / ``numerics(deterministic=False)``: a loop started inside
such a block inherits its choice.

Example:
    >>> with numerics(flush_denormal=True):
    ...     torch.tensor([1e-40]).mul(1.0).item()
    0.0
    >>> with numerics(flush_denormal=False):
    ...     torch.tensor([1e-40]).mul(1.0).item() > 0
    True
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from interplab.errors import check

FLUSH_ENV = "INTERPLAB_FLUSH_DENORMAL"
DETERMINISTIC_ENV = "INTERPLAB_DETERMINISTIC"
_OFF = ("0", "false", "no", "off")
# torch has no getter for the flush state: remember what we set (torch starts with it off)
_flush_now = False
# choices of enclosing numerics() blocks, innermost last
_stack: list["Numerics"] = []


@dataclass(frozen=True)
class Numerics:
    """The two switches; see the module docstring."""

    flush_denormal: bool = True
    deterministic: bool = True


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in _OFF


def current() -> Numerics:
    """The settings a loop started now would use: the innermost ``numerics()`` block's, else the
    environment variables', else on.

    Example:
        >>> with numerics(deterministic=False):
        ...     current().deterministic
        False
    """
    if _stack:
        return _stack[-1]
    return Numerics(flush_denormal=_env_flag(FLUSH_ENV), deterministic=_env_flag(DETERMINISTIC_ENV))


def _apply_flush(on: bool) -> None:
    global _flush_now
    torch.set_flush_denormal(on)  # returns False where the CPU has no FTZ/DAZ: nothing to flush then
    _flush_now = on


@contextlib.contextmanager
def numerics(flush_denormal: bool | None = None, deterministic: bool | None = None) -> Iterator[Numerics]:
    """Run a block with subnormals flushed and deterministic algorithms (``None``: inherit, see
    :func:`current`); the previous state is restored on exit. Yields the settings in force.

    Example:
        >>> with numerics() as n:
        ...     n.flush_denormal, torch.are_deterministic_algorithms_enabled()
        (True, True)
        >>> torch.are_deterministic_algorithms_enabled()
        False
    """
    base = current()
    want = Numerics(base.flush_denormal if flush_denormal is None else bool(flush_denormal),
                    base.deterministic if deterministic is None else bool(deterministic))
    old_flush = _flush_now
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if want.deterministic:
        # cuBLAS reads this when its first handle is created; harmless on the CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _apply_flush(want.flush_denormal)
    torch.use_deterministic_algorithms(want.deterministic, warn_only=True)
    _stack.append(want)
    try:
        yield want
    finally:
        _stack.pop()
        _apply_flush(old_flush)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def count_subnormal(x: torch.Tensor) -> int:
    """How many entries of a floating tensor are subnormal (nonzero, below ``finfo(dtype).tiny`` in
    magnitude): the numbers x86 CPUs handle on their slow path unless flushed.

    Example:
        >>> count_subnormal(torch.tensor([1e-40, 1e-30, 0.0, -1e-39]))
        2
    """
    check(x.is_floating_point(), f"count_subnormal needs a floating tensor, got {x.dtype}.")
    tiny = torch.finfo(x.dtype).tiny
    return int(((x != 0) & (x.abs() < tiny)).sum())


__all__ = ["Numerics", "numerics", "current", "count_subnormal", "FLUSH_ENV", "DETERMINISTIC_ENV"]
