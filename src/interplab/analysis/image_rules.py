"""Candidate templates for an image-labeling rule, read from a CNN's own representation.

A CNN trained on "similar to a template digit" labels puts its fc1 activations on a few arms
(:mod:`interplab.analysis.arms`): inputs move away from a resting point along one direction
per side of the rule. Each arm gives two template candidates for
:func:`interplab.analysis.rules.search_rules`: the input that maximizes the arm direction
(feature visualization) and the mean of the inputs furthest along it. These need no hint;
a hint's decodings (:func:`interplab.analysis.templates.hint_decodings`) are added beside them.

Example:
    >>> import numpy as np, torch
    >>> from interplab.models import ConvNet, ConvNetConfig, pixels_to_input
    >>> from interplab.instrument import site_values
    >>> net = ConvNet(ConvNetConfig(channels1=2, channels2=2, d_fc=6), seed=0)
    >>> images = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28)).astype(np.uint8)
    >>> acts = site_values(net, pixels_to_input(images), "fc1.hook_post")
    >>> found = arm_templates(net, "fc1.hook_post", acts, images, n_extreme=5, featviz_steps=2)
    >>> sorted(found.templates), found.featviz.shape
    (['extreme arm 0', 'extreme arm 1', 'featviz arm 0', 'featviz arm 1'], (2, 28, 28))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interplab.analysis.arms import Arms, fit_arms
from interplab.analysis.featviz import visualize
from interplab.analysis.templates import to_template


@dataclass
class ArmTemplates:
    """``templates`` (name -> 28x28 uint8), the fitted ``arms``, positions ``[N, n_arms]`` along them, and
    the arms' feature visualizations ``featviz`` ``[n_arms, 28, 28]`` in [0, 1]."""

    templates: dict[str, np.ndarray]
    arms: Arms
    positions: Tensor
    featviz: np.ndarray


def arm_templates(net: Any, site: str, acts: Tensor, images: np.ndarray, *, n_arms: int = 2, n_extreme: int = 50,
                  featviz_steps: int = 96, seed: int = 0, quiet: bool = True) -> ArmTemplates:
    """Fit ``n_arms`` arms to ``acts`` ``[N, d]`` (the activations of ``images`` at ``site``) and make templates.

    ``images``: uint8 ``(N, 28, 28)``, the inputs whose activations ``acts`` are; ``net``: the
    model, run only to visualize each arm direction at ``site`` (``featviz_steps`` Adam steps, two
    starts); ``n_extreme``: inputs averaged into each arm's extreme template. Templates are named
    ``featviz arm a`` and ``extreme arm a``. Errors: those of :func:`fit_arms` (too few points).

    Example: see the module docstring.
    """
    arms = fit_arms(acts, n_arms=n_arms, seed=seed)
    positions = arms.project(acts).float()
    fv = visualize(net, site, arms.directions.float(), steps=featviz_steps, n_starts=2, seed=seed,
                   quiet=quiet).detach().cpu().float().numpy()
    templates: dict[str, np.ndarray] = {}
    for a in range(n_arms):
        templates[f"featviz arm {a}"] = to_template(fv[a])
        top = positions[:, a].argsort(descending=True)[:n_extreme].cpu().numpy()
        templates[f"extreme arm {a}"] = to_template(np.asarray(images)[top].astype(np.float64).mean(0) / 255.0)
    return ArmTemplates(templates=templates, arms=arms, positions=positions, featviz=fv)


__all__ = ["ArmTemplates", "arm_templates"]
