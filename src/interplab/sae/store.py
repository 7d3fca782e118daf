"""Activation store: a site's activations on token sequences, shuffled, in memory or from disk.

An :class:`ActivationStore` streams batches of token sequences through a hooked model (a
:mod:`interplab.models` transformer or a TransformerBridge language model), keeps the
activations of one site at every position (``exclude_bos`` drops position 0) or at chosen
``positions``, and hands out shuffled batches from a buffer of ``size`` rows: when half of the
buffer has been used, that half is refilled with fresh rows and the whole buffer reshuffled, so
a batch mixes many sequences (the SAELens ``ActivationsStore`` habit).

For activation sets larger than memory, :func:`write_shards` runs the model once and writes
the rows as safetensors shards of ``shard_rows`` rows each (shuffled within the shard) plus
``store.json``; :meth:`ActivationStore.from_shards` then trains from them, reading one shard at
a time in a random order per pass. Memory is bounded by ``1.5 size + shard_rows`` rows (the
buffer, the half being refilled and one shard), whatever the size of the set on disk: a 10 GB set with a 1 GB buffer and
256 MB shards trains in a few GB of RAM.

Normalisation (Anthropic, "Towards Monosemanticity" / SAELens ``expected_average_only_in``):
every row is multiplied by one constant ``scale = sqrt(d_in) / E||x||``, so that the rows the
SAE sees have ``E||x|| = sqrt(d_in)`` whatever the model's residual scale. The constant comes
from the first ``norm_rows`` rows in sequence order (or, for shards, from every row, computed
while writing); put it in the SAE as ``SAEConfig(act_scale=store.scale)``, where
:meth:`interplab.sae.model.SAE.reconstruct` undoes it when splicing.

Resume: :meth:`state_dict` holds the buffer, the read position, the leftover rows of the last
chunk and the source's cursor (sequence order or shard order); the generator is its owner's
(:func:`interplab.sae.train.train_sae` saves it), so training resumed from a checkpoint sees
the same batches, bitwise, as an uninterrupted run.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> model = Transformer(TransformerConfig(d_vocab=11, n_ctx=6, d_model=8, n_heads=2, d_mlp=16), seed=0)
    >>> tokens = torch.randint(1, 11, (40, 6), generator=torch.Generator().manual_seed(0))
    >>> store = ActivationStore.from_model(model, "blocks.0.hook_resid_post", tokens, size=64, model_batch=4)
    >>> store.next(16).shape, store.d
    (torch.Size([16, 8]), 8)
    >>> round(float(store.next(32).norm(dim=-1).mean()) / 8 ** 0.5, 1)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.devices import model_device
from interplab.errors import check
from interplab.instrument import cache
from interplab.io import PathLike, atomic_write_json, load_tensors, read_json, save_tensors

STORE_FILENAME = "store.json"


class TokenRows(Protocol):
    """Anything that serves token sequences by index: a ``[N, T]`` tensor, or a dataset with
    ``__len__`` and ``rows(index) -> [n, T]`` (e.g. :class:`interplab.lm.tokens.TokenDataset`)."""

    def __len__(self) -> int: ...


def take_tokens(tokens: Any, index: Tensor) -> Tensor:
    """Sequences ``index`` of ``tokens`` (a tensor or a dataset with ``rows``), ``[n, T]``.

    Example:
        >>> take_tokens(torch.arange(12).reshape(4, 3), torch.tensor([2, 0])).tolist()
        [[6, 7, 8], [0, 1, 2]]
    """
    if isinstance(tokens, Tensor):
        return tokens[index.to(tokens.device)]
    check(hasattr(tokens, "rows"), f"tokens must be a tensor or have a rows(index) method, got {type(tokens).__name__}.")
    return tokens.rows(index)


def site_rows(act: Tensor, positions: Sequence[int] | None = None, exclude_bos: bool = True) -> Tensor:
    """Rows ``[rows, d]`` of a site's activation ``[batch, pos, d]`` (or ``[batch, d]``).

    ``positions`` picks token positions (used as given); otherwise every position, without
    position 0 when ``exclude_bos``.

    Example:
        >>> a = torch.arange(12.0).reshape(1, 3, 4)
        >>> site_rows(a).shape, site_rows(a, exclude_bos=False).shape, site_rows(a, [-1]).tolist()
        (torch.Size([2, 4]), torch.Size([3, 4]), [[8.0, 9.0, 10.0, 11.0]])
    """
    if act.dim() == 2:
        return act
    if positions is not None:
        act = act[:, list(positions)]
    elif exclude_bos:
        act = act[:, 1:]
    return act.reshape(-1, act.shape[-1])


@torch.no_grad()
def run_site(model: torch.nn.Module, hook_name: str, tokens: Tensor, positions: Sequence[int] | None = None,
             exclude_bos: bool = True) -> Tensor:
    """Run ``model`` on ``tokens [n, T]`` and return ``hook_name``'s rows (see :func:`site_rows`), detached.

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=4, d_model=8, n_heads=2, d_mlp=16))
        >>> run_site(m, "blocks.0.hook_resid_post", torch.zeros(3, 4, dtype=torch.long)).shape
        torch.Size([9, 8])
    """
    _, acts = cache(model, tokens, names=hook_name, stop=True)  # the layers after the site are not run
    return site_rows(acts[hook_name].detach(), positions, exclude_bos)


@dataclass(frozen=True)
class TokenSite:
    """A hook name read at every token position (without BOS when ``exclude_bos``) or at
    chosen ``positions``; reads and writes rows like :class:`interplab.sae.buffer.Site`, so
    splicing code (:func:`interplab.sae.metrics.loss_recovered`) takes either.

    Example:
        >>> s = TokenSite("blocks.0.hook_resid_post")
        >>> a = torch.zeros(2, 3, 4)
        >>> s.read(a).shape, s.write(a, torch.ones(4, 4))[:, 0].sum().item(), s.write(a, torch.ones(4, 4)).sum().item()
        (torch.Size([4, 4]), 0.0, 16.0)
    """

    name: str
    positions: tuple[int, ...] | None = None
    exclude_bos: bool = True

    @property
    def position(self) -> None:
        """None: a token site reads several positions (kept for :class:`Site`'s readers)."""
        return None

    def read(self, act: Tensor) -> Tensor:
        """Rows ``[rows, d]`` (see :func:`site_rows`)."""
        return site_rows(act, self.positions, self.exclude_bos)

    def write(self, act: Tensor, rows: Tensor) -> Tensor:
        """A copy of ``act`` with the rows :meth:`read` takes replaced by ``rows``."""
        if act.dim() == 2:
            return rows.reshape(act.shape).to(act.dtype)
        out = act.clone()
        index = list(self.positions) if self.positions is not None else slice(1 if self.exclude_bos else 0, None)
        out[:, index] = rows.reshape(out[:, index].shape).to(act.dtype)
        return out


def norm_scale(rows: Tensor) -> float:
    """The constant ``sqrt(d) / mean ||row||`` that makes the mean row norm ``sqrt(d)``.

    Example:
        >>> norm_scale(torch.full((10, 4), 3.0))  # norm 6, sqrt(4) = 2
        0.3333333333333333
    """
    mean_norm = rows.double().norm(dim=-1).mean().item()
    check(mean_norm > 0, "The activations are all zero; they cannot be normalised.")
    return math.sqrt(rows.shape[-1]) / mean_norm


class _ModelSource:
    """Chunks of rows from running the model on sequences in a random order per pass."""

    def __init__(self, model: torch.nn.Module, hook_name: str, tokens: Any, positions: Sequence[int] | None,
                 exclude_bos: bool, model_batch: int) -> None:
        check(len(tokens) > 0, "The token set is empty.")
        check(model_batch >= 1, f"model_batch must be at least 1, got {model_batch}.")
        hooks = getattr(model, "hook_dict", None) or getattr(model, "mod_dict", {})
        check(hook_name in hooks, f"The model has no activation site named {hook_name!r}.")
        self.model, self.hook_name, self.tokens = model, hook_name, tokens
        self.positions = None if positions is None else tuple(int(p) for p in positions)
        self.exclude_bos, self.model_batch = exclude_bos, model_batch
        self.device = model_device(model)  # tokens go where the model is
        self.reset()

    def reset(self) -> None:
        self.order: Tensor | None = None
        self.cursor = 0

    def rows_of(self, index: Tensor) -> Tensor:
        tokens = take_tokens(self.tokens, index).to(self.device)
        return run_site(self.model, self.hook_name, tokens, self.positions, self.exclude_bos)

    def next_chunk(self, generator: torch.Generator) -> Tensor:
        if self.order is None or self.cursor >= len(self.order):
            self.order, self.cursor = torch.randperm(len(self.tokens), generator=generator), 0
        index = self.order[self.cursor : self.cursor + self.model_batch]
        self.cursor += len(index)
        return self.rows_of(index)

    def scale(self, norm_rows: int) -> float:
        rows, i = [], 0
        while sum(len(r) for r in rows) < norm_rows and i < len(self.tokens):
            rows.append(self.rows_of(torch.arange(i, min(i + self.model_batch, len(self.tokens)))))
            i += self.model_batch
        return norm_scale(torch.cat(rows)[:norm_rows])

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.cursor = state["order"], int(state["cursor"])


class _ShardSource:
    """Chunks of rows read one shard at a time, shards in a random order per pass."""

    def __init__(self, directory: PathLike, device: torch.device | str | None) -> None:
        self.dir = Path(directory)
        check((self.dir / STORE_FILENAME).is_file(), f"{self.dir} holds no activation shards ({STORE_FILENAME} is missing).")
        self.meta = read_json(self.dir / STORE_FILENAME)
        self.shards = [self.dir / name for name in self.meta["shards"]]
        missing = [p.name for p in self.shards if not p.is_file()]
        check(not missing, f"Activation shard {missing[0] if missing else ''} is missing from {self.dir}.")
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.order: Tensor | None = None
        self.cursor = 0

    def next_chunk(self, generator: torch.Generator) -> Tensor:
        if self.order is None or self.cursor >= len(self.order):
            self.order, self.cursor = torch.randperm(len(self.shards), generator=generator), 0
        path = self.shards[int(self.order[self.cursor])]
        self.cursor += 1
        rows = load_tensors(path)["acts"].float()
        return rows if self.device is None else rows.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.cursor = state["order"], int(state["cursor"])


class ActivationStore:
    """Shuffled, normalised activation rows from a model or from disk shards; see the module docstring.

    Build with :meth:`from_model` or :meth:`from_shards`. It offers what
    :func:`interplab.sae.train.train_sae` needs of a buffer: ``next(batch_size)``, ``size``,
    ``d``, ``site`` (a :class:`TokenSite`), ``generator``, ``rows`` (setting it to None restarts the stream) and
    ``state_dict`` / ``load_state_dict``. ``peak_rows`` records the most rows held at once
    (buffer plus the chunks drawn for a refill): at most ``1.5 size + chunk`` where a chunk is
    one shard or one model batch's rows.
    """

    def __init__(self, source: _ModelSource | _ShardSource, hook_name: str, generator: torch.Generator | None,
                 size: int, scale: float) -> None:
        check(size >= 2, f"The buffer needs room for at least 2 rows, got {size}.")
        self.source, self.size, self.scale = source, size, float(scale)
        positions, exclude_bos = ((source.positions, source.exclude_bos) if isinstance(source, _ModelSource)
                                  else (source.meta["positions"], source.meta["exclude_bos"]))
        self.site = TokenSite(hook_name, None if positions is None else tuple(positions), bool(exclude_bos))
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._rows: Tensor | None = None
        self.pending: Tensor | None = None
        self.ptr = 0
        self.peak_rows = 0

    @classmethod
    def from_model(cls, model: torch.nn.Module, hook_name: str, tokens: Any, generator: torch.Generator | None = None,
                   *, positions: Sequence[int] | None = None, exclude_bos: bool = True, size: int = 16384,
                   model_batch: int = 32, normalize: bool = True, scale: float | None = None,
                   norm_rows: int = 4096) -> ActivationStore:
        """A store that runs ``model`` on sequences of ``tokens`` (``[N, T]`` tensor or token dataset).

        ``scale``: a given normalisation constant; else ``sqrt(d)/E||x||`` over the first
        ``norm_rows`` rows when ``normalize``, else 1. Raises :class:`InterplabError` for an
        unknown site or an empty token set.

        Example: see the module docstring.
        """
        source = _ModelSource(model, hook_name, tokens, positions, exclude_bos, model_batch)
        if scale is None:
            scale = source.scale(norm_rows) if normalize else 1.0
        return cls(source, hook_name, generator, size, scale)

    @classmethod
    def from_shards(cls, directory: PathLike, generator: torch.Generator | None = None, *, size: int = 16384,
                    normalize: bool = True, device: torch.device | str | None = None) -> ActivationStore:
        """A store reading the shards :func:`write_shards` wrote into ``directory``.

        Example:
            >>> import tempfile
            >>> from interplab.models import Transformer, TransformerConfig
            >>> m = Transformer(TransformerConfig(d_vocab=7, n_ctx=5, d_model=8, n_heads=2, d_mlp=16))
            >>> d = write_shards(m, "blocks.0.hook_resid_post", torch.randint(7, (30, 5)), tempfile.mkdtemp(),
            ...                  shard_rows=32, quiet=True)
            >>> store = ActivationStore.from_shards(d, size=64)
            >>> store.next(8).shape, len(store.source.shards)
            (torch.Size([8, 8]), 4)
        """
        source = _ShardSource(directory, device)
        meta = source.meta
        scale = math.sqrt(meta["d"]) / meta["mean_norm"] if normalize else 1.0
        return cls(source, meta["hook_name"], generator, size, scale)

    @property
    def rows(self) -> Tensor | None:
        """The buffer ``[size, d]`` (normalised rows), None before the first fill."""
        return self._rows

    @rows.setter
    def rows(self, value: Tensor | None) -> None:
        if value is None:  # a fresh start: the stream begins again
            self.source.reset()
            self.pending = None
        self._rows = value

    def _draw(self, n: int) -> Tensor:
        out = [] if self.pending is None else [self.pending]
        have = sum(len(t) for t in out)
        while have < n:
            chunk = self.source.next_chunk(self.generator)
            out.append(chunk)
            have += len(chunk)
            self.peak_rows = max(self.peak_rows, (0 if self._rows is None else self.size) + have)
        rows = torch.cat(out) if len(out) > 1 else out[0]
        self.pending = rows[n:].clone() if len(rows) > n else None
        return rows[:n] * self.scale

    def _refill(self) -> None:
        if self._rows is None:
            self._rows = self._draw(self.size)
        elif self.ptr > 0:
            self._rows[: self.ptr] = self._draw(self.ptr)
        self._rows = self._rows[torch.randperm(self.size, generator=self.generator).to(self._rows.device)]
        self.ptr = 0

    @property
    def d(self) -> int:
        """Width of the rows (fills the buffer if it is still empty)."""
        if self._rows is None:
            self._refill()
        assert self._rows is not None
        return self._rows.shape[1]

    def next(self, batch_size: int) -> Tensor:
        """The next ``batch_size`` normalised rows; refills the used half first when half is used."""
        check(1 <= batch_size <= self.size // 2, f"batch_size must be between 1 and half the buffer "
              f"({self.size // 2}), got {batch_size}.")
        if self._rows is None or self.ptr + batch_size > self.size // 2:
            self._refill()
        assert self._rows is not None
        batch = self._rows[self.ptr : self.ptr + batch_size]
        self.ptr += batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Buffer, read position, leftover rows, scale and the source's cursor (not the generator)."""
        return {"rows": self._rows, "ptr": self.ptr, "pending": self.pending, "scale": self.scale,
                "source": self.source.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self._rows, self.ptr, self.pending = state["rows"], int(state["ptr"]), state["pending"]
        self.scale = float(state["scale"])
        self.source.load_state_dict(state["source"])


@torch.no_grad()
def write_shards(model: torch.nn.Module, hook_name: str, tokens: Any, out_dir: PathLike, *,
                 positions: Sequence[int] | None = None, exclude_bos: bool = True, model_batch: int = 32,
                 shard_rows: int = 65536, dtype: torch.dtype = torch.float32, seed: int = 0,
                 quiet: bool = False) -> Path:
    """Run ``model`` over every sequence of ``tokens`` once and write ``hook_name``'s rows as shards.

    ``out_dir`` gets ``shard_XXXXX.safetensors`` (key ``acts``, ``[<= shard_rows, d]``, rows
    shuffled within the shard by ``seed``) and ``store.json`` (site, width, row counts, the
    exact mean row norm for normalisation). At most ``shard_rows`` plus one model batch of
    rows are held in memory. Writes are atomic.

    Example: see :meth:`ActivationStore.from_shards`.
    """
    check(shard_rows >= 1, f"shard_rows must be at least 1, got {shard_rows}.")
    check(dtype in (torch.float32, torch.float16, torch.bfloat16), f"Shards are float32, float16 or bfloat16, got {dtype}.")
    source = _ModelSource(model, hook_name, tokens, positions, exclude_bos, model_batch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    names: list[str] = []
    counts: list[int] = []
    held: list[Tensor] = []
    norm_sum, n_rows, d = 0.0, 0, 0

    def flush(rows: Tensor) -> None:
        name = f"shard_{len(names):05d}.safetensors"
        rows = rows[torch.randperm(len(rows), generator=g).to(rows.device)]
        save_tensors(out / name, {"acts": rows.to("cpu", dtype).contiguous()})
        names.append(name)
        counts.append(len(rows))

    for start in tqdm(range(0, len(tokens), model_batch), disable=quiet, desc="shards", unit="batch"):
        rows = source.rows_of(torch.arange(start, min(start + model_batch, len(tokens))))
        d = rows.shape[-1]
        norm_sum += rows.double().norm(dim=-1).sum().item()
        n_rows += len(rows)
        held.append(rows)
        have = sum(len(r) for r in held)
        while have >= shard_rows:
            allrows = torch.cat(held)
            flush(allrows[:shard_rows])
            held = [allrows[shard_rows:]] if len(allrows) > shard_rows else []
            have -= shard_rows
    if held:
        flush(torch.cat(held))
    check(n_rows > 0 and norm_sum > 0, "The site's activations are empty or all zero; nothing to store.")
    atomic_write_json(out / STORE_FILENAME, {
        "hook_name": hook_name, "d": d, "rows": n_rows, "shards": names, "shard_rows": counts,
        "mean_norm": norm_sum / n_rows, "positions": None if positions is None else list(positions),
        "exclude_bos": exclude_bos, "dtype": str(dtype).removeprefix("torch."),
    })
    return out


__all__ = ["ActivationStore", "TokenSite", "write_shards", "site_rows", "run_site", "take_tokens", "norm_scale", "STORE_FILENAME"]
