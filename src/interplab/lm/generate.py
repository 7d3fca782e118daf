"""Sampling from a causal LM: temperature, top-k, and one seed for every draw.

:func:`generate` extends token sequences one token at a time (the whole prefix is run again
at each step: our models are small and have no key-value cache). Temperature 0 is greedy
decoding; otherwise tokens are drawn from ``softmax(logits / temperature)`` (restricted to the
``top_k`` most likely when given) with a ``torch.Generator`` seeded by ``seed`` on the model's
device, so the same seed gives the same text. :func:`complete` does the same from a string.

Example:
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=10, n_ctx=12, d_model=16, n_heads=2, d_mlp=32), seed=0)
    >>> x = torch.tensor([[0, 3, 4]])
    >>> a = generate(m, x, max_new_tokens=5, temperature=1.0, seed=1)
    >>> a.shape, torch.equal(a, generate(m, x, max_new_tokens=5, temperature=1.0, seed=1))
    (torch.Size([1, 8]), True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from interplab.devices import model_device
from interplab.errors import check
from interplab.lm.tokenizer import bos_id, decode, encode


@torch.no_grad()
def generate(model: torch.nn.Module, tokens: Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, stop_token: int | None = None) -> Tensor:
    """Continue ``tokens`` ``[batch, pos]`` by up to ``max_new_tokens``; returns ``[batch, pos + new]``.

    Stops early once every row has produced ``stop_token`` (later tokens of finished rows are
    ``stop_token``). The context is cut to the model's ``n_ctx`` (its last positions) when it
    grows longer. Raises :class:`InterplabError` for a negative temperature or a bad ``top_k``.
    Example: see the module docstring.
    """
    check(tokens.dim() == 2 and tokens.shape[1] >= 1, f"tokens must be [batch, pos >= 1], got {tuple(tokens.shape)}.")
    check(temperature >= 0, f"temperature must be non-negative, got {temperature}.")
    check(max_new_tokens >= 0, f"max_new_tokens must be non-negative, got {max_new_tokens}.")
    check(top_k is None or top_k >= 1, f"top_k must be at least 1, got {top_k}.")
    device = model_device(model)
    g = torch.Generator(device=device).manual_seed(seed)
    out = tokens.to(device)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    done = torch.zeros(out.shape[0], dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        ctx = out if n_ctx is None else out[:, -n_ctx:]
        logits = model(ctx)[:, -1].float()  # [batch, vocab]
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]
        if stop_token is not None:
            nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
            done |= nxt == stop_token
        out = torch.cat([out, nxt[:, None]], dim=1)
        if stop_token is not None and bool(done.all()):
            break
    return out


def complete(model: torch.nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 20,
             temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> str:
    """The text the model writes after ``prompt`` (given after BOS), up to the next BOS.

    Example:
        >>> from interplab.lm.tokenizer import train_tokenizer
        >>> from interplab.models import Transformer, TransformerConfig
        >>> tok = train_tokenizer(["Ada plays tennis."] * 5, 270)
        >>> m = Transformer(TransformerConfig(d_vocab=270, n_ctx=16, d_model=16, n_heads=2, d_mlp=32))
        >>> isinstance(complete(m, tok, "Ada plays", max_new_tokens=3), str)
        True
    """
    bos = bos_id(tokenizer)
    x = torch.tensor([[bos, *encode(tokenizer, prompt)]])
    y = generate(model, x, max_new_tokens, temperature, top_k, seed, stop_token=bos)[0, x.shape[1]:].tolist()
    return decode(tokenizer, y[:y.index(bos)] if bos in y else y)


__all__ = ["generate", "complete"]
