"""Instrumented models: each a TransformerLens ``HookedRootModule`` with TL site names.

Example:
    >>> from interplab.models import Transformer, TransformerConfig
    >>> Transformer(TransformerConfig(d_vocab=5, n_ctx=3, d_model=8, n_heads=2)).cfg.d_mlp
    512
"""

from interplab.models.base import (HookedModel, Positions, check_nonempty, config_from_dict, model_config_dict,
                                   model_for_config, model_from_config_dict, readout_positions)
from interplab.models.convnet import ConvNet, ConvNetConfig, pixels_to_input
from interplab.models.mlp import MLP, MLPConfig
from interplab.models.tms import TMSConfig, ToyModelOfSuperposition
from interplab.models.transformer import Transformer, TransformerConfig

__all__ = [
    "model_for_config",
    "HookedModel", "Positions", "check_nonempty", "config_from_dict", "model_config_dict", "model_from_config_dict",
    "readout_positions",
    "ConvNet", "ConvNetConfig", "pixels_to_input", "MLP", "MLPConfig",
    "TMSConfig", "ToyModelOfSuperposition", "Transformer", "TransformerConfig",
]
