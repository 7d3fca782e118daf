"""Fact completion: prompts of known facts, batched exactly, scored by the model's greedy answer.

A fact prompt (:func:`interplab.lm.corpus.fact_prompts`) such as ``"Mira Tolvane plays the sport
of"`` with answer ``" tennis"`` is tokenized as ``[BOS] + prompt + answer``. Prompts of equal
token lengths are batched together (no padding, so every number is that of the prompt alone).
A fact counts as recalled when the model's argmax at each answer position, with the earlier
answer tokens given (teacher forcing, equal to greedy decoding of the answer), is the answer's
token.

Example:
    >>> import tempfile
    >>> from interplab.lm.corpus import make_corpus, fact_prompts
    >>> from interplab.lm.tokenizer import train_tokenizer
    >>> from interplab.models import Transformer, TransformerConfig
    >>> c = make_corpus(tempfile.mkdtemp(), n_bytes=3000, n_people=3, n_cities=2, n_countries=1, n_objects=2,
    ...                 quiet=True)
    >>> tok = train_tokenizer(c.documents(), 300)
    >>> m = Transformer(TransformerConfig(d_vocab=300, n_ctx=64, d_model=16, n_heads=2, d_mlp=32))
    >>> acc = fact_accuracy(m, tok, fact_prompts(c))
    >>> sorted(acc), 0.0 <= acc["sport"] <= 1.0
    (['colour', 'country', 'home', 'sport', 'team'], True)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interplab.devices import model_device
from interplab.errors import check
from interplab.lm.corpus import FactPrompt
from interplab.lm.tokenizer import bos_id, encode


@dataclass
class FactBatch:
    """Prompts with equal prompt and answer lengths: ``tokens`` ``[n, 1 + prompt_len + answer_len]``.

    ``index``: positions of these prompts in the list given to :func:`fact_batches`.
    ``last``: the position of the last prompt token (where the first answer token is predicted).
    """

    tokens: Tensor
    index: list[int]
    prompt_len: int
    answer_len: int

    @property
    def last(self) -> int:
        return self.prompt_len

    @property
    def answers(self) -> Tensor:
        """Answer tokens ``[n, answer_len]``."""
        return self.tokens[:, self.prompt_len + 1:]


def fact_batches(tokenizer: Any, prompts: Sequence[FactPrompt], device: torch.device | str = "cpu"
                 ) -> list[FactBatch]:
    """Tokenize ``prompts`` as ``[BOS] + prompt + answer`` and group them by lengths.

    Example:
        >>> from interplab.lm.tokenizer import train_tokenizer
        >>> tok = train_tokenizer(["Ada plays the sport of chess."] * 5, 270)
        >>> b = fact_batches(tok, [FactPrompt("sport", "Ada", "Ada plays the sport of", " chess")])[0]
        >>> b.tokens[0, 0].item() == bos_id(tok), b.index
        (True, [0])
    """
    check(len(prompts) > 0, "There are no fact prompts to evaluate.")
    bos = bos_id(tokenizer)
    groups: dict[tuple[int, int], list[tuple[int, list[int]]]] = defaultdict(list)
    for i, p in enumerate(prompts):
        head = encode(tokenizer, p.prompt)
        full = encode(tokenizer, p.prompt + p.answer)
        check(full[:len(head)] == head and len(full) > len(head),
              f"The answer {p.answer!r} does not tokenize apart from its prompt {p.prompt!r}.")
        groups[(len(head), len(full) - len(head))].append((i, [bos, *full]))
    return [FactBatch(torch.tensor([t for _, t in rows], device=device), [i for i, _ in rows], plen, alen)
            for (plen, alen), rows in sorted(groups.items())]


@torch.no_grad()
def fact_recalled(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[FactPrompt]) -> Tensor:
    """Whether the model completes each fact exactly (greedy, all answer tokens): bool ``[len(prompts)]``.

    Example: see the module docstring.
    """
    device = model_device(model)
    out = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for b in fact_batches(tokenizer, prompts, device):
        logits = model(b.tokens[:, :-1])[:, b.last:]  # [n, answer_len, vocab]
        out[b.index] = (logits.argmax(-1) == b.answers).all(-1)
    return out.cpu()


def fact_accuracy(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[FactPrompt]) -> dict[str, float]:
    """Fraction of facts recalled exactly, per attribute (``{"sport": 0.9, ...}``).

    Example: see the module docstring.
    """
    ok = fact_recalled(model, tokenizer, prompts)
    by: dict[str, list[bool]] = defaultdict(list)
    for p, r in zip(prompts, ok.tolist()):
        by[p.attribute].append(r)
    return {a: sum(v) / len(v) for a, v in by.items()}


__all__ = ["FactBatch", "fact_batches", "fact_recalled", "fact_accuracy"]
