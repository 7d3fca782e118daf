"""Where an SAE reads, and a shuffled buffer of activations from there.

A :class:`~interplab.instrument.Site` is a TransformerLens hook name plus, optionally, one
index along axis 1 (a token position of a sequence model, or an instance of a toy model of
superposition); it turns the hook's activation into rows ``[rows, d]`` and writes rows back
for splicing.

An :class:`ActivationBuffer` runs a hooked model on inputs drawn by a sampler
``(generator, n) -> inputs``, keeps ``size`` rows, hands out random batches, and when half of
them are used refills those with fresh activations and reshuffles, so each batch mixes many
inputs. All randomness comes from one CPU ``torch.Generator`` (the same rows on every device);
:meth:`ActivationBuffer.state_dict` saves what exact resume needs. The rows live on the
model's device; when they do not fit in GPU memory, in pinned CPU memory, and each batch is
copied to the device as it is handed out.

Example:
    >>> import torch
    >>> from interplab.instrument import Site
    >>> from interplab.models import MLP, MLPConfig
    >>> model = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=2))
    >>> g = torch.Generator().manual_seed(0)
    >>> buf = ActivationBuffer(model, Site("layers.0.hook_post"), sample_rows(torch.randn(100, 4)), g, size=64)
    >>> buf.next(16).shape
    torch.Size([16, 8])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from interplab.devices import model_device, resolve_device
from interplab.errors import check
from interplab.instrument import Site, site_values

Sampler = Callable[[torch.Generator, int], Tensor]


def sample_rows(inputs: Tensor) -> Sampler:
    """A sampler drawing rows of a fixed set of ``inputs`` uniformly with replacement.

    Example:
        >>> s = sample_rows(torch.arange(10))
        >>> s(torch.Generator().manual_seed(0), 4).shape
        torch.Size([4])
    """
    check(len(inputs) > 0, "The input set to sample from is empty.")

    def sample(generator: torch.Generator, n: int) -> Tensor:
        return inputs[torch.randint(len(inputs), (n,), generator=generator)]

    return sample


def collect(model: torch.nn.Module, site: Site, inputs: Any, batch_size: int = 4096) -> Tensor:
    """Run ``model`` on ``inputs`` (in batches) and return ``site``'s rows (raises if the site is unknown).

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> collect(MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=2)), Site("layers.0.hook_pre"), torch.randn(3, 4)).shape
        torch.Size([3, 8])
    """
    return site.read(site_values(model, inputs, site.name, batch_size))


class ActivationBuffer:
    """A shuffled store of activation rows; see the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        site: Site,
        sampler: Sampler,
        generator: torch.Generator,
        size: int = 16384,
        model_batch: int = 1024,
        device: str | torch.device | None = None,
    ) -> None:
        check(size >= 2, f"The buffer needs room for at least 2 rows, got {size}.")
        check(model_batch >= 1, f"model_batch must be at least 1, got {model_batch}.")
        self.model, self.site, self.sampler, self.generator = model, site, sampler, generator
        self.size, self.model_batch = size, model_batch
        self.device = model_device(model) if device is None else resolve_device(device)
        self.rows: Tensor | None = None  # on self.device, or pinned CPU memory when it did not fit there
        self.ptr = 0

    def _allocate(self, d: int, dtype: torch.dtype) -> Tensor:
        try:
            return torch.empty(self.size, d, dtype=dtype, device=self.device)
        except torch.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            return torch.empty(self.size, d, dtype=dtype).pin_memory()

    def _fill(self, n: int) -> None:
        """Write ``n`` fresh rows into ``rows[:n]`` (allocating the buffer on the first call)."""
        have = 0
        while have < n:
            rows = collect(self.model, self.site, self.sampler(self.generator, self.model_batch))
            if self.rows is None:
                self.rows = self._allocate(rows.shape[1], rows.dtype)
            take = min(len(rows), n - have)
            self.rows[have : have + take] = rows[:take]
            have += take

    def _refill(self) -> None:
        if self.rows is None:
            self._fill(self.size)
        elif self.ptr > 0:
            self._fill(self.ptr)
        assert self.rows is not None
        perm = torch.randperm(self.size, generator=self.generator).to(self.rows.device)
        if self.rows.is_pinned():
            self.rows.copy_(self.rows[perm])  # keep the pinned storage
        else:
            self.rows = self.rows[perm]
        self.ptr = 0

    @property
    def d(self) -> int:
        """Width of the rows (fills the buffer if it is still empty)."""
        if self.rows is None:
            self._refill()
        assert self.rows is not None
        return self.rows.shape[1]

    def next(self, batch_size: int) -> Tensor:
        """The next ``batch_size`` rows; refills the used half first when half is used."""
        check(1 <= batch_size <= self.size // 2, f"batch_size must be between 1 and half the buffer "
              f"({self.size // 2}), got {batch_size}.")
        if self.rows is None or self.ptr + batch_size > self.size // 2:
            self._refill()
        assert self.rows is not None
        batch = self.rows[self.ptr : self.ptr + batch_size]
        self.ptr += batch_size
        return batch.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        """Buffer contents and read position (the generator is saved by its owner)."""
        return {"rows": self.rows, "ptr": self.ptr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        rows = state["rows"]
        if rows is not None and (self.rows is None or not self.rows.is_pinned()):
            rows = rows.to(self.device)
        elif rows is not None:
            rows = rows.pin_memory()
        self.rows, self.ptr = rows, int(state["ptr"])
