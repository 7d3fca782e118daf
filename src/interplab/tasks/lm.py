"""Language modelling on a token file: next-token loss at every position, fact recall on the side.

:class:`LMTask` is a training objective (:class:`interplab.train.Objective`) over a corpus
directory holding ``tokens.bin`` and ``tokenizer.json`` (see :func:`interplab.lm.tokens.tokenize_corpus`;
``interplab corpus make`` writes both). Rows of ``n_ctx`` tokens (each starting with BOS) are
split into training rows and the last ``frac_test`` of the stream, held out; an epoch is one
shuffled pass over the training rows, or, with ``rows_per_epoch``, that many rows drawn
without replacement from a fresh shuffle (shorter epochs: more frequent logs and checkpoints,
still resumed exactly). ``evaluate`` reports the mean loss per token on a fixed
sample of training rows and on the held-out rows and, for a generated corpus (with
``entities.json``), the fact-completion accuracy per attribute (``fact_acc_sport``, ...) and
over all facts (``fact_acc``).

Example:
    >>> import tempfile
    >>> from interplab.lm.corpus import make_corpus
    >>> from interplab.lm.tokens import tokenize_corpus
    >>> from interplab.models import Transformer
    >>> d = tempfile.mkdtemp()
    >>> _ = make_corpus(d, n_bytes=4000, n_people=3, n_cities=2, n_countries=1, n_objects=2, quiet=True)
    >>> _ = tokenize_corpus(d, vocab_size=300, quiet=True)
    >>> task = LMTask(d, n_ctx=48)
    >>> model = Transformer(task.default_model_config(d_model=16, n_heads=2, d_mlp=32), seed=0)
    >>> batch = next(iter(task.batches(torch.Generator().manual_seed(0), 4)))
    >>> batch.shape, task.loss(model, batch).item() > 5.0
    (torch.Size([4, 49]), True)
    >>> sorted(task.evaluate(model))[:3]
    ['fact_acc', 'fact_acc_colour', 'fact_acc_country']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from interplab.devices import model_device
from interplab.errors import check
from interplab.lm.corpus import fact_prompts, load_corpus
from interplab.lm.facts import fact_accuracy
from interplab.lm.tokenizer import encode, load_tokenizer
from interplab.lm.tokens import TokenDataset
from interplab.models import TransformerConfig


def next_token_loss(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``tokens[:, :-1]`` (nats per token).

    Example:
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=5, n_ctx=4, d_model=8, n_heads=2, d_mlp=None))
        >>> round(next_token_loss(m, torch.tensor([[0, 1, 2, 3, 4]])).item(), 1)
        1.8
    """
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``logits [N, T, V]`` on ``tokens [N, T]`` (position t
    predicts token t+1), a loss for :func:`loss_recovered` on a language model.

    Example:
        >>> round(next_token_ce(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)).item(), 4) == round(1.3862943611198906, 4)
        True
    """
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


class LMTask:
    """Next-token prediction on a corpus directory; see the module docstring.

    The model sees ``n_ctx - 1`` input tokens per row (a row is ``n_ctx`` tokens: inputs
    plus the last target), so a model with ``n_ctx`` positions or more fits.
    Raises :class:`InterplabError` if the directory has no token file or tokenizer.
    """

    name = "lm"

    def __init__(self, corpus: str | Path, n_ctx: int = 64, frac_test: float = 0.02, seed: int = 0,
                 eval_rows: int = 64, facts: bool = True, rows_per_epoch: int | None = None) -> None:
        self.corpus = Path(corpus)
        check(self.corpus.is_dir(), f"Corpus directory {self.corpus} does not exist.")
        check(0.0 < frac_test < 1.0, f"frac_test must be in (0, 1), got {frac_test}.")
        check(rows_per_epoch is None or rows_per_epoch >= 1, f"rows_per_epoch must be at least 1, got {rows_per_epoch}.")
        self.n_ctx, self.frac_test, self.seed, self.eval_rows = n_ctx, frac_test, seed, eval_rows
        self.rows_per_epoch = rows_per_epoch
        self.data = TokenDataset(self.corpus / "tokens.bin", n_ctx + 1)
        self.tokenizer = load_tokenizer(self.corpus)
        n = len(self.data)
        n_test = max(1, int(round(frac_test * n))) if n > 1 else 0
        self.train_rows = torch.arange(n - n_test)
        self.test_rows = torch.arange(n - n_test, n)
        g = torch.Generator().manual_seed(seed)
        self.eval_train_rows = self.train_rows[torch.randperm(len(self.train_rows), generator=g)[:eval_rows]]
        self.prompts = fact_prompts(load_corpus(self.corpus)) if facts and (self.corpus / "entities.json").is_file() \
            else []
        # a fact is asked only where BOS + prompt + answer fits the context (the model reads all but the last token)
        self.prompts = [p for p in self.prompts if len(encode(self.tokenizer, p.prompt + p.answer)) <= n_ctx]

    def default_model_config(self, **overrides: Any) -> TransformerConfig:
        """A small GPT-2-like shape: 2 layers, d_model 128, 4 heads, d_mlp 512, GELU, LayerNorm, fused kernels.

        Example: see the module docstring.
        """
        cfg = TransformerConfig(d_vocab=self.data.vocab_size, n_ctx=self.n_ctx, d_model=128, n_layers=2, n_heads=4,
                                d_mlp=512, act_fn="gelu", normalization="LN", fused=True)
        return dataclasses.replace(cfg, **overrides)

    def batches(self, generator: torch.Generator, batch_size: int | None) -> Iterator[Tensor]:
        """One epoch of shuffled training rows (``batch_size`` default 32); see the module docstring."""
        if self.rows_per_epoch is None:
            yield from self.data.batches(batch_size or 32, generator, self.train_rows)
            return
        rows = self.train_rows[torch.randperm(len(self.train_rows), generator=generator)[:self.rows_per_epoch]]
        yield from self.data.batches(batch_size or 32, generator, rows)

    def loss(self, model: torch.nn.Module, batch: Tensor) -> Tensor:
        """Mean next-token cross-entropy over every position of ``batch`` ``[B, n_ctx + 1]``."""
        return next_token_loss(model, batch.to(model_device(model)))

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """``train_loss``, ``test_loss`` (per token) and, on a generated corpus, ``fact_acc[_ATTRIBUTE]``."""
        out = {"train_loss": self._mean_loss(model, self.eval_train_rows)}
        if len(self.test_rows):
            out["test_loss"] = self._mean_loss(model, self.test_rows[:self.eval_rows])
        if self.prompts:
            acc = fact_accuracy(model, self.tokenizer, self.prompts)
            out["fact_acc"] = sum(acc[a] * sum(p.attribute == a for p in self.prompts) for a in acc) / len(self.prompts)
            out.update({f"fact_acc_{a}": v for a, v in acc.items()})
        return out

    def _mean_loss(self, model: torch.nn.Module, rows: Tensor) -> float:
        losses = [next_token_loss(model, self.data.rows(r).to(model_device(model))).item()
                  for r in rows.split(32)]
        sizes = [len(r) for r in rows.split(32)]
        return sum(loss * s for loss, s in zip(losses, sizes)) / sum(sizes)

    def describe(self) -> dict[str, Any]:
        """JSON description (config.json); :func:`interplab.tasks.make_task` rebuilds the task from it."""
        return {"name": self.name, "corpus": str(self.corpus), "n_ctx": self.n_ctx, "frac_test": self.frac_test,
                "seed": self.seed, "eval_rows": self.eval_rows, "facts": bool(self.prompts), "rows_per_epoch": self.rows_per_epoch}


def lm_task(corpus: str = "", n_ctx: int = 64, rows_per_epoch: int = 2048, seed: int = 0) -> LMTask:
    """The ``lm`` task of ``interplab train`` (its option defaults live here): :class:`LMTask` on ``corpus``.

    Raises :class:`~interplab.errors.InterplabError` when no corpus directory is given.

    Example:
        >>> lm_task()
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The lm task needs --corpus DIR (a directory made by `interplab corpus make`).
    """
    check(bool(corpus), "The lm task needs --corpus DIR (a directory made by `interplab corpus make`).")
    return LMTask(corpus, n_ctx=n_ctx, rows_per_epoch=rows_per_epoch, seed=seed)


__all__ = ["LMTask", "lm_task", "next_token_ce", "next_token_loss"]
