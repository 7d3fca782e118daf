"""Synthetic sparse features for toy models of superposition, as a training objective.

Each feature is 0 with probability ``S`` (the sparsity) and uniform on [0, 1] otherwise; the
loss is ``sum_i I_i (x_i - x'_i)^2`` with importances ``I_i``. Every instance of a
:class:`~interplab.models.ToyModelOfSuperposition` is trained on its own data with its own
sparsity and importance, all in one batch ``[batch, instances, features]``.

Options beyond independent features:

- ``correlated``: sets of features that are present together (one coin per set);
- ``anticorrelated``: sets of which at most one feature is present (each keeps density ``1-S``);
- ``n_samples``: a finite dataset of ``T`` points per instance instead of fresh samples, with
  ``normalize=True`` to scale every point to unit norm (the memorization setting).

:class:`SparseFeatures` follows the :class:`interplab.train.Objective` protocol: an "epoch" is
``steps_per_epoch`` freshly sampled batches, and :meth:`SparseFeatures.evaluate` uses one small
fixed batch drawn from ``seed``, so it is cheap and repeatable; its random numbers are shared
by all instances, so restarts of one setting are compared on the same points.

Example:
    >>> import torch
    >>> from interplab.models import ToyModelOfSuperposition, TMSConfig
    >>> obj = SparseFeatures(n_instances=3, n_features=5, sparsity=[0.0, 0.5, 0.9],
    ...                      importance=[0.9 ** i for i in range(5)])
    >>> x = obj.sample(torch.Generator().manual_seed(0), 1000)
    >>> x.shape, [round(v, 1) for v in (x == 0).float().mean(dim=(0, 2)).tolist()]
    (torch.Size([1000, 3, 5]), [0.0, 0.5, 0.9])
    >>> model = ToyModelOfSuperposition(TMSConfig(n_instances=3, n_features=5, n_hidden=2))
    >>> obj.loss(model, x).shape, sorted(obj.evaluate(model))
    (torch.Size([]), ['train_loss'])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from interplab.errors import InterplabError, check


def _per_instance(value: float | Sequence[float] | Tensor, n_instances: int, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(n_instances)
    check(t.numel() == n_instances, f"{name} needs one value or one per instance ({n_instances}), got {t.numel()}.")
    return t.clone()


class SparseFeatures:
    """Sparse synthetic features and the importance-weighted reconstruction loss.

    Args:
        n_instances, n_features: the model's instance and feature counts.
        sparsity: ``S``, one value or one per instance, in [0, 1).
        importance: ``I``: a scalar, ``[n_features]``, or ``[n_instances, n_features]``.
        correlated, anticorrelated: disjoint sets of feature indices (see the module docstring).
        n_samples: ``T``: one value or one per instance for a finite dataset; None for fresh samples.
        normalize: scale every data point to unit norm (all-zero points are drawn again).
        steps_per_epoch: batches per epoch. eval_batch: size of the fixed evaluation batch.
        seed: draws the evaluation batch and the finite dataset.
    """

    def __init__(
        self,
        n_instances: int,
        n_features: int,
        sparsity: float | Sequence[float] | Tensor = 0.0,
        importance: float | Sequence[float] | Sequence[Sequence[float]] | Tensor = 1.0,
        correlated: Sequence[Sequence[int]] = (),
        anticorrelated: Sequence[Sequence[int]] = (),
        n_samples: int | Sequence[int] | None = None,
        normalize: bool = False,
        steps_per_epoch: int = 100,
        eval_batch: int = 2048,
        seed: int = 0,
    ) -> None:
        check(n_instances >= 1 and n_features >= 1, "n_instances and n_features must be at least 1.")
        check(steps_per_epoch >= 1 and eval_batch >= 1, "steps_per_epoch and eval_batch must be at least 1.")
        self.n_instances, self.n_features = n_instances, n_features
        self.sparsity = _per_instance(sparsity, n_instances, "sparsity")
        check(bool(((self.sparsity >= 0) & (self.sparsity < 1)).all()), "sparsity must be in [0, 1).")
        imp = torch.as_tensor(importance, dtype=torch.float32)
        check(imp.dim() <= 2, "importance must be a scalar, [n_features] or [n_instances, n_features].")
        try:
            self.importance = imp.expand(n_instances, n_features).clone()
        except RuntimeError:
            raise InterplabError(f"importance of shape {tuple(imp.shape)} does not fit "
                                 f"[n_instances={n_instances}, n_features={n_features}].") from None
        check(bool((self.importance >= 0).all()), "importance must not be negative.")
        self.correlated = [sorted(int(i) for i in s) for s in correlated]
        self.anticorrelated = [sorted(int(i) for i in s) for s in anticorrelated]
        used = [i for s in self.correlated + self.anticorrelated for i in s]
        check(all(0 <= i < n_features for i in used), f"feature sets must hold indices in [0, {n_features}).")
        check(len(used) == len(set(used)), "correlated and anticorrelated feature sets must be disjoint.")
        check(all(len(s) >= 2 for s in self.correlated + self.anticorrelated), "each feature set needs 2 or more features.")
        for s in self.anticorrelated:
            check(bool((len(s) * (1 - self.sparsity) <= 1 + 1e-6).all()),
                  f"an anticorrelated set of {len(s)} features needs density 1-S at most 1/{len(s)}.")
        self.normalize = normalize
        self.steps_per_epoch, self.eval_batch, self.seed = steps_per_epoch, eval_batch, seed
        g = torch.Generator().manual_seed(seed)
        self.n_samples: Tensor | None = None
        self.data: Tensor | None = None
        if n_samples is not None:
            self.n_samples = _per_instance(n_samples, n_instances, "n_samples").long()
            check(bool((self.n_samples >= 1).all()), "n_samples must be at least 1.")
            self.data = self._draw(g, int(self.n_samples.max()))  # [T_max, instances, features]
            rows = torch.arange(self.data.shape[0])[:, None]
            self.data_mask = rows < self.n_samples[None, :]  # which rows belong to each instance
        self.eval_x = self._draw(g, eval_batch, shared=True)

    # -- sampling -------------------------------------------------------------------------
    def sample(self, generator: torch.Generator, batch: int, shared: bool = False) -> Tensor:
        """Fresh features ``[batch, instances, features]`` (ignores ``n_samples``).

        One uniform ``u`` per entry decides both: present iff ``u > S``, value
        ``(u - S) / (1 - S)`` (uniform on (0, 1) given present). Feature sets draw their own coins. ``shared=True``
        draws the random numbers once for all instances, so instances with equal settings see
        equal points (used for the evaluation batch: their losses then compare exactly).

        Example:
            >>> obj = SparseFeatures(n_instances=2, n_features=3, sparsity=0.5)
            >>> x = obj.sample(torch.Generator().manual_seed(0), 4, shared=True)
            >>> bool(torch.equal(x[:, 0], x[:, 1]))
            True
        """
        k = 1 if shared else self.n_instances
        S = self.sparsity[None, :, None]
        p = 1 - S  # density per instance
        u = torch.rand(batch, k, self.n_features, generator=generator)
        x = (u * (1 / p)).add_(-S / p).relu_()  # = relu((u - S) / p), in place for speed
        if not (self.correlated or self.anticorrelated):
            return x
        values = torch.rand(batch, k, self.n_features, generator=generator)
        for s in self.correlated:
            on = torch.rand(batch, k, 1, generator=generator) < p
            x[..., s] = values[..., s] * on
        for s in self.anticorrelated:
            on = torch.rand(batch, k, 1, generator=generator) < len(s) * p
            which = torch.randint(len(s), (batch, k), generator=generator)
            x[..., s] = values[..., s] * (torch.nn.functional.one_hot(which, len(s)).bool() & on)
        return x

    def _draw(self, generator: torch.Generator, batch: int, shared: bool = False) -> Tensor:
        x = self.sample(generator, batch, shared)
        if not self.normalize:
            return x
        for _ in range(1000):  # a zero point has no direction: draw those again
            zero = x.norm(dim=-1) == 0
            if not zero.any():
                break
            x[zero] = self.sample(generator, batch)[zero]
        check(not bool((x.norm(dim=-1) == 0).any()), "features are too sparse to draw non-zero points to normalize.")
        return x / x.norm(dim=-1, keepdim=True)

    def finite_batch(self, generator: torch.Generator, batch: int) -> Tensor:
        """A batch drawn with replacement from each instance's own ``n_samples`` points."""
        check(self.data is not None, "finite_batch needs n_samples.")
        idx = (torch.rand(batch, self.n_instances, generator=generator) * self.n_samples[None, :]).long()
        return self.data[idx, torch.arange(self.n_instances)[None, :]]

    def dataset(self, instance: int) -> Tensor:
        """The finite dataset ``[T, features]`` of one instance."""
        check(self.data is not None, "dataset needs n_samples.")
        return self.data[: int(self.n_samples[instance]), instance]

    # -- Objective protocol ------------------------------------------------------------------
    def batches(self, generator: torch.Generator, batch_size: int | None) -> Iterator[Tensor]:
        """``steps_per_epoch`` batches of ``batch_size`` (default 1024), freshly drawn."""
        check(batch_size is None or batch_size >= 1, f"batch_size must be at least 1, got {batch_size}.")
        size = 1024 if batch_size is None else batch_size
        for _ in range(self.steps_per_epoch):
            yield self.finite_batch(generator, size) if self.data is not None else self._draw(generator, size)

    def instance_losses(self, model: torch.nn.Module, x: Tensor) -> Tensor:
        """Importance-weighted MSE per instance: mean over batch and features, ``[instances]``."""
        x = x.to(device=model.W.device, dtype=model.W.dtype)
        sq = (x - model(x)).pow_(2).mean(0)  # [instances, features]
        return (self.importance.to(x.device) * sq).mean(-1)

    @torch.no_grad()
    def best_instances(self, model: torch.nn.Module, restarts: int) -> Tensor:
        """Index of the lowest-loss instance in each run of ``restarts`` consecutive instances.

        Lay instances out as ``setting * restarts + restart`` (equal settings, different
        initialisations); the losses are on the shared evaluation batch (finite datasets: on
        each instance's own data), so restarts are compared on the same points.

        Example:
            >>> from interplab.models import ToyModelOfSuperposition, TMSConfig
            >>> obj = SparseFeatures(n_instances=6, n_features=3, sparsity=0.5)
            >>> model = ToyModelOfSuperposition(TMSConfig(n_instances=6, n_features=3, n_hidden=2))
            >>> best = obj.best_instances(model, restarts=3)
            >>> best.shape, bool((best // 3 == torch.arange(2)).all())
            (torch.Size([2]), True)
        """
        check(restarts >= 1 and self.n_instances % restarts == 0,
              f"restarts must divide the {self.n_instances} instances, got {restarts}.")
        losses = self.dataset_losses(model) if self.data is not None else self.instance_losses(model, self.eval_x)
        groups = losses.view(-1, restarts)
        return groups.argmin(1).cpu() + torch.arange(len(groups)) * restarts

    def loss(self, model: torch.nn.Module, batch: Tensor) -> Tensor:
        """The instance losses summed (instances are independent), a scalar."""
        return self.instance_losses(model, batch).sum()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """``train_loss`` (summed over instances) on the fixed batch, or on the finite datasets
        with ``test_loss`` on fresh points."""
        if self.data is None:
            return {"train_loss": self.instance_losses(model, self.eval_x).sum().item()}
        return {"train_loss": self.dataset_losses(model).sum().item(),
                "test_loss": self.instance_losses(model, self.eval_x).sum().item()}

    @torch.no_grad()
    def dataset_losses(self, model: torch.nn.Module) -> Tensor:
        """Per-instance loss over each instance's whole finite dataset, ``[instances]``."""
        check(self.data is not None, "dataset_losses needs n_samples.")
        x = self.data.to(device=model.W.device, dtype=model.W.dtype)
        err = (self.importance.to(x.device) * (x - model(x)) ** 2).mean(-1)
        mask = self.data_mask.to(x.device)
        return (err * mask).sum(0) / mask.sum(0)

    def describe(self) -> dict[str, Any]:
        """JSON description; ``SparseFeatures(**describe() minus name)`` rebuilds it."""
        return {
            "name": "sparse-features",
            "n_instances": self.n_instances,
            "n_features": self.n_features,
            "sparsity": self.sparsity.tolist(),
            "importance": self.importance.tolist(),
            "correlated": self.correlated,
            "anticorrelated": self.anticorrelated,
            "n_samples": None if self.n_samples is None else self.n_samples.tolist(),
            "normalize": self.normalize,
            "steps_per_epoch": self.steps_per_epoch,
            "eval_batch": self.eval_batch,
            "seed": self.seed,
        }



def from_description(description: dict[str, Any]) -> SparseFeatures:
    """Rebuild a :class:`SparseFeatures` from its :meth:`~SparseFeatures.describe` output.

    Example:
        >>> obj = SparseFeatures(n_instances=2, n_features=3, sparsity=[0.1, 0.2], n_samples=4)
        >>> bool(torch.equal(from_description(obj.describe()).data, obj.data))
        True
    """
    d = dict(description)
    name = d.pop("name", "sparse-features")
    check(name == "sparse-features", f"A {name!r} description is not a sparse-features objective.")
    return SparseFeatures(**d)
