"""What every interplab model shares: a frozen config dataclass and a TransformerLens root.

Every model is a :class:`transformer_lens.HookedRootModule` whose activation sites are
:class:`transformer_lens.hook_points.HookPoint` modules named as in TransformerLens, so
``run_with_cache`` and ``run_with_hooks`` work as the field is used to. Its config is a
frozen dataclass stored in ``config.json``; weights are initialised from ``seed`` alone.

Example:
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=10, n_ctx=3, d_model=16, n_heads=2, d_mlp=32))
    >>> model_config_dict(m)["class"]
    'Transformer'
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformer_lens import HookedRootModule

from interplab.errors import InterplabError, check


class HookedModel(HookedRootModule):
    """Base class: holds ``cfg`` and a seeded generator used only for initialisation."""

    config_class: ClassVar[type]

    def __init__(self, cfg: Any, seed: int = 0) -> None:
        super().__init__()
        check(
            isinstance(cfg, self.config_class),
            f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}.",
        )
        self.cfg = cfg
        self.seed = seed

    def init_generator(self) -> torch.Generator:
        """A CPU generator seeded with the model's seed, so init never touches global RNG."""
        return torch.Generator().manual_seed(self.seed)


_REGISTRY: dict[str, type[HookedModel]] = {}


def register(cls: type[HookedModel]) -> type[HookedModel]:
    """Class decorator: make ``cls`` loadable by name from ``config.json``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def model_for_config(cfg: Any, seed: int = 0) -> HookedModel:
    """A fresh model of the registered class whose ``config_class`` is ``type(cfg)``.

    Example:
        >>> from interplab.models import MLPConfig
        >>> type(model_for_config(MLPConfig(2, (3,), 2))).__name__
        'MLP'
    """
    found = [c for c in _REGISTRY.values() if c.config_class is type(cfg)]
    check(len(found) == 1, f"No registered model class takes a {type(cfg).__name__}.")
    return found[0](cfg, seed=seed)


def config_from_dict(config_class: type, d: dict[str, Any]) -> Any:
    """Build a frozen config dataclass from JSON data, turning lists back into tuples.

    Example:
        >>> from interplab.models import MLPConfig
        >>> config_from_dict(MLPConfig, {"d_in": 2, "d_hidden": [3], "d_out": 2}).d_hidden
        (3,)
        >>> config_from_dict(MLPConfig, {"d_in": 2, "width": 3})
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: MLPConfig has no setting 'width' (known: d_in, d_hidden, d_out, act_fn, bias).
    """
    names = [f.name for f in dataclasses.fields(config_class)]
    for k in d:
        check(k in names, f"{config_class.__name__} has no setting {k!r} (known: {', '.join(names)}).")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return config_class(**values)
    except TypeError as e:
        raise InterplabError(f"{config_class.__name__} settings are incomplete: {e}.") from None


def model_config_dict(model: HookedModel) -> dict[str, Any]:
    """The JSON form of a model's class, config and init seed.

    Example: see the module docstring.
    """
    return {"class": type(model).__name__, "seed": model.seed, "cfg": dataclasses.asdict(model.cfg)}


def model_from_config_dict(d: dict[str, Any]) -> HookedModel:
    """Rebuild an (initialised, untrained) model from :func:`model_config_dict` output.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> m = model_from_config_dict(model_config_dict(MLP(MLPConfig(2, (3,), 2))))
        >>> type(m).__name__
        'MLP'
    """
    name = d.get("class")
    check(name in _REGISTRY, f"Unknown model class {name!r} (known: {', '.join(sorted(_REGISTRY))}).")
    cls = _REGISTRY[name]
    return cls(config_from_dict(cls.config_class, d.get("cfg", {})), seed=int(d.get("seed", 0)))


Positions = int | Sequence[int] | Tensor | None


def readout_positions(positions: Positions, n: int) -> Tensor | None:
    """Readout positions in any accepted form as a long tensor of indices in ``0..n-1`` (or None).

    The one reading of a ``positions`` argument, used wherever one is accepted: ``None`` means
    every position; an int (also a 0-d tensor or numpy integer) means that one position; a
    list, tuple, range, 1-d tensor or array means those positions, in the order given and
    repeats kept (the output then has one row per entry). Negative positions count from the
    end, as in Python. Raises :class:`InterplabError` for an empty, non-integer, nested or
    out-of-range value, or ``n == 0``.

    Example:
        >>> readout_positions(-1, 4).tolist(), readout_positions((0, -1, 0), 4).tolist()
        ([3], [0, 3, 0])
        >>> readout_positions(None, 4) is None, readout_positions(torch.tensor(0), 4).tolist()
        (True, [0])
        >>> readout_positions([4], 4)
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: positions [4] are out of range for sequences of length 4.
    """
    if positions is None:
        return None
    check(not isinstance(positions, (bool, str, bytes, float)),
          f"positions must be an int or a sequence of ints, got {positions!r}.")
    if isinstance(positions, numbers.Integral):
        positions = [int(positions)]
    try:
        idx = torch.as_tensor(positions if isinstance(positions, Tensor) else list(positions))
    except (TypeError, ValueError, RuntimeError):
        raise InterplabError(f"positions must be an int or a sequence of ints, got {positions!r}.") from None
    check(idx.dim() <= 1, f"positions must be one int or a flat sequence of ints, got shape {tuple(idx.shape)}.")
    idx = idx.reshape(-1)
    check(idx.numel() > 0, "positions must name at least one position.")
    check(not idx.is_floating_point() and not idx.is_complex() and idx.dtype != torch.bool,
          f"positions must be integers, got {idx.tolist()}.")
    check(n >= 1, "positions cannot be read from sequences of length 0.")
    idx = idx.long()
    check(bool(((idx >= -n) & (idx < n)).all()), f"positions {idx.tolist()} are out of range for sequences of length {n}.")
    return idx % n


def check_nonempty(x: Tensor, what: str) -> None:
    """Raise :class:`InterplabError` if ``x`` holds no values (a batch of 0, or an axis of length 0).

    Every model checks its input with this before the forward pass, so an empty batch or a
    sequence of length 0 gives one sentence instead of an error from inside PyTorch.

    Example:
        >>> check_nonempty(torch.zeros(2, 3), "inputs")
        >>> check_nonempty(torch.zeros(0, 3), "inputs")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: inputs of shape (0, 3) are empty; pass at least one example, with no axis of length 0.
    """
    check(x.numel() > 0, f"{what} of shape {tuple(x.shape)} are empty; pass at least one example, with no axis of length 0.")
