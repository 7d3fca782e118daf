"""The EIS VII challenge 1 CNN, exactly as published, with sites at every stage.

conv 1->8 3x3, ReLU, maxpool 2; conv 8->16 3x3, ReLU, maxpool 2; fc 400->200, ReLU;
fc 200->2. Parameter names match the published state dict (``conv1.weight`` ...), so
:meth:`ConvNet.from_file` loads ``eis-vii/mnist_model.pt`` unchanged. Inputs are images
``[batch, 28, 28]`` or ``[batch, 1, 28, 28]`` with pixels in [0, 1]
(:func:`pixels_to_input` converts uint8 0..255).

Sites: ``hook_input``, ``conv1.hook_pre``/``hook_post`` [b, 8, 26, 26], ``hook_pool1``
[b, 8, 13, 13], ``conv2.hook_pre``/``hook_post`` [b, 16, 11, 11], ``hook_pool2`` [b, 16, 5, 5],
``fc1.hook_pre``/``hook_post`` [b, 200], ``hook_logits`` [b, 2].

Example:
    >>> import torch
    >>> net = ConvNet(ConvNetConfig(), seed=0)
    >>> logits, cache = net.run_with_cache(torch.rand(3, 28, 28))
    >>> logits.shape, cache["fc1.hook_post"].shape, cache["hook_pool2"].shape
    (torch.Size([3, 2]), torch.Size([3, 200]), torch.Size([3, 16, 5, 5]))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interplab.errors import check
from interplab.io import PathLike, load_state_into, load_torch
from interplab.models.base import HookedModel, check_nonempty, register


@dataclass(frozen=True)
class ConvNetConfig:
    """The challenge architecture; the sizes are settings so a smaller variant can be built."""

    channels1: int = 8
    channels2: int = 16
    d_fc: int = 200
    n_classes: int = 2


class Conv(nn.Module):
    """3x3 convolution + ReLU with sites hook_pre and hook_post."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.empty(c_out))
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_post(F.relu(self.hook_pre(F.conv2d(x, self.weight, self.bias))))


class Linear(nn.Module):
    """``x W^T + b`` (torch layout, as published) with sites hook_pre and hook_post."""

    def __init__(self, d_in: int, d_out: int, relu: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out))
        self.relu = relu
        if relu:
            self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = F.linear(x, self.weight, self.bias)
        return self.hook_post(F.relu(self.hook_pre(pre))) if self.relu else pre


def pixels_to_input(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (N, 28, 28) in 0..255 to float inputs in [0, 1].

    Example:
        >>> import numpy as np
        >>> pixels_to_input(np.full((1, 28, 28), 255, dtype=np.uint8)).max().item()
        1.0
    """
    t = torch.as_tensor(np.asarray(images))
    return t.float() / 255.0


@register
class ConvNet(HookedModel):
    """The challenge 1 CNN; see the module docstring."""

    config_class = ConvNetConfig

    def __init__(self, cfg: ConvNetConfig | None = None, seed: int = 0) -> None:
        super().__init__(cfg or ConvNetConfig(), seed)
        cfg = self.cfg
        self.conv1 = Conv(1, cfg.channels1)
        self.conv2 = Conv(cfg.channels1, cfg.channels2)
        self.fc1 = Linear(cfg.channels2 * 25, cfg.d_fc, relu=True)
        self.fc2 = Linear(cfg.d_fc, cfg.n_classes, relu=False)
        self.hook_input, self.hook_pool1, self.hook_pool2 = HookPoint(), HookPoint(), HookPoint()
        self.hook_logits = HookPoint()
        g = self.init_generator()
        with torch.no_grad():  # torch's default (Kaiming-uniform) bounds
            for mod in (self.conv1, self.conv2, self.fc1, self.fc2):
                bound = 1.0 / float(np.sqrt(mod.weight[0].numel()))
                mod.weight.uniform_(-bound, bound, generator=g)
                mod.bias.uniform_(-bound, bound, generator=g)
        self.setup()

    def forward(self, images: Tensor) -> Tensor:
        """Logits [batch, n_classes] for images in [0, 1]."""
        if images.dim() == 3:
            images = images[:, None]
        check(
            images.dim() == 4 and tuple(images.shape[1:]) == (1, 28, 28),
            f"ConvNet input must have shape [batch, 28, 28] or [batch, 1, 28, 28], got {tuple(images.shape)}.",
        )
        check_nonempty(images, "ConvNet inputs")
        x = self.hook_input(images.to(self.fc1.weight.device, self.fc1.weight.dtype))  # on the model's device, in its dtype
        x = self.hook_pool1(F.max_pool2d(self.conv1(x), 2))
        x = self.hook_pool2(F.max_pool2d(self.conv2(x), 2))
        x = self.fc1(x.flatten(1))
        return self.hook_logits(self.fc2(x))

    def head(self) -> ConvNetHead:
        """The network from ``hook_pool2`` on (fc1, fc2), sharing this network's weights and sites.

        Its input is the ``hook_pool2`` activation ``[batch, channels2, 5, 5]``; ``fc1.hook_pre``,
        ``fc1.hook_post`` and ``hook_logits`` keep their names, so ablations and scrubbing at those
        sites can run on cached pool2 activations without recomputing the convolutions.

        Example:
            >>> import torch
            >>> net = ConvNet(ConvNetConfig(channels1=2, channels2=3, d_fc=4), seed=0)
            >>> x = torch.rand(5, 28, 28)
            >>> logits, cache = net.run_with_cache(x)
            >>> torch.allclose(net.head()(cache["hook_pool2"]), logits)
            True
        """
        return ConvNetHead(self.fc1, self.fc2)

    @classmethod
    def from_file(cls, path: PathLike) -> ConvNet:
        """Load a published PyTorch state dict (e.g. ``eis-vii/mnist_model.pt``) safely.

        Uses ``torch.load(weights_only=True, map_location="cpu")``: nothing but tensors
        is unpickled. Errors for a missing, corrupt or mismatched file are one sentence.

        Example:
            >>> ConvNet.from_file("/nonexistent/model.pt")
            Traceback (most recent call last):
            ...
            interplab.errors.InterplabError: Model file /nonexistent/model.pt does not exist.
        """
        path = Path(path)
        state = load_torch(path, "Model file")
        check(isinstance(state, dict), f"Model file {path} does not hold a state dict.")
        w1, w2, f1 = (state.get(k) for k in ("conv1.weight", "conv2.weight", "fc1.weight"))
        check(
            all(isinstance(w, Tensor) for w in (w1, w2, f1)),
            f"Model file {path} lacks conv1/conv2/fc1 weights of the challenge CNN.",
        )
        net = cls(ConvNetConfig(channels1=w1.shape[0], channels2=w2.shape[0], d_fc=f1.shape[0],
                                n_classes=state["fc2.weight"].shape[0] if "fc2.weight" in state else 2))
        load_state_into(net, {k: v.float() for k, v in state.items()}, path)
        net.eval()
        return net


class ConvNetHead(HookedRootModule):
    """The fully connected part of a :class:`ConvNet` (see :meth:`ConvNet.head`)."""

    def __init__(self, fc1: Linear, fc2: Linear) -> None:
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2
        self.hook_pool2, self.hook_logits = HookPoint(), HookPoint()
        self.setup()

    def forward(self, pool2: Tensor) -> Tensor:
        """Logits [batch, n_classes] from pool2 activations [batch, channels2, 5, 5]."""
        check_nonempty(pool2, "pool2 activations")
        x = self.fc1(self.hook_pool2(pool2).flatten(1))
        return self.hook_logits(self.fc2(x))
