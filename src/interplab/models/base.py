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
from typing import Any, ClassVar

import torch
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
