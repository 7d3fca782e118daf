"""Embedding analyses on any token embedding matrix ``W_E [d_vocab, d_model]`` and residual stream.

- :func:`pairwise_cosines`: cosine similarity of every pair of token embeddings, optionally
  after subtracting the mean embedding (raw embeddings of trained models share a large common
  direction, which makes every pair look similar; centring reveals the spread);
- :func:`token_properties` and :func:`property_probes`: linear regressions of token properties
  (length, leading space, capital, digit, ...) on the embeddings, via :func:`interplab.analysis.probes.probe`;
- :func:`relation_consistency`: for pairs (e.g. country -> capital), are the relation vectors
  ``e(dst) - e(src)`` consistent (cosine between them, analogy accuracy), against a shuffled
  pairing;
- :func:`truncation_similarity`: cosine between a token's residual stream with its preceding
  context and with the context removed (the token alone), per position; averaged by token
  category it shows which tokens need context (word continuations) and which do not;
- :func:`index_in_word`: each token's index within its word, the target of a probe for
  emergent positional information;
- :func:`majority_category`: each token's most frequent category in annotated text (e.g. the
  generated corpus), a property to probe and a way to group tokens.

These follow the embedding puzzles and the detokenisation measurements of Nanda et al. (2023),
"Fact Finding" (Alignment Forum), post 5 ("Do Early Layers Specialise in Local Processing?"),
and the common practice of mean-centring embeddings before comparing them (e.g. Ethayarajh
2019, "How Contextual are Contextualized Word Representations?").

Example:
    >>> import torch
    >>> E = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) + 3.0   # a shared offset
    >>> bool(pairwise_cosines(E).mean() > 0.5), bool(pairwise_cosines(E, center=True).mean().abs() < 0.1)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interplab.analysis.probes import ProbeResult, probe
from interplab.errors import check
from interplab.instrument import site_values


def pairwise_cosines(E: Tensor, center: bool = False, max_tokens: int | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """Cosine similarity of every pair of rows of ``E [n, d]`` (upper triangle, ``[n (n - 1) / 2]``).

    ``center``: subtract the mean row first. ``max_tokens``: use a random subset of that many
    rows (from ``generator``) for large vocabularies. Rows of zero norm give 0.

    Example:
        >>> import torch
        >>> pairwise_cosines(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])).tolist()
        [0.0, 0.7071067690849304, 0.7071067690849304]
    """
    check(E.dim() == 2 and E.shape[0] >= 2, f"E must have shape [n >= 2, d], got {tuple(E.shape)}.")
    X = E.detach().float()
    if max_tokens is not None and X.shape[0] > max_tokens:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        X = X[torch.randperm(X.shape[0], generator=g)[:max_tokens].to(X.device)]
    if center:
        X = X - X.mean(0, keepdim=True)
    X = X / X.norm(dim=1, keepdim=True).clamp(min=1e-12)
    i, j = torch.triu_indices(X.shape[0], X.shape[0], offset=1, device=X.device)
    return (X @ X.T)[i, j]


def token_properties(strings: Sequence[str], space_markers: str = " \u0120\u2581") -> dict[str, Tensor]:
    """Properties of token strings: ``length`` (characters, without a leading space marker),
    ``leading_space``, ``capital`` (first letter upper case), ``digit`` (contains a digit),
    ``alpha`` (letters only, after the space marker).

    ``space_markers``: characters that mean "starts with a space" (a space, GPT-2's ``Ġ``,
    SentencePiece's ``▁``). Returns ``{name: [n]}`` (float for length, bool otherwise).

    Example:
        >>> p = token_properties(["\u0120Paris", "is", "42", "\u0120."])
        >>> p["length"].tolist(), p["leading_space"].tolist(), p["capital"].tolist()
        ([5.0, 2.0, 2.0, 1.0], [True, False, False, True], [True, False, False, False])
    """
    check(len(strings) > 0, "token_properties needs at least one token string.")
    body = [s[1:] if s[:1] and s[0] in space_markers else s for s in strings]
    return {
        "length": torch.tensor([float(len(b)) for b in body]),
        "leading_space": torch.tensor([bool(s[:1]) and s[0] in space_markers for s in strings]),
        "capital": torch.tensor([bool(b[:1]) and b[0].isupper() for b in body]),
        "digit": torch.tensor([any(c.isdigit() for c in b) for b in body]),
        "alpha": torch.tensor([b.isalpha() for b in body]),
    }


def property_probes(E: Tensor, properties: dict[str, Tensor], min_count: int = 5, **probe_kwargs: Any
                    ) -> dict[str, ProbeResult]:
    """Linear probes for token properties from embeddings ``E [n, d]`` (one row per token).

    Boolean properties get a logistic probe (test accuracy), numeric ones a ridge regression
    (test R^2). A boolean property with fewer than ``min_count`` tokens on either side is
    skipped. ``probe_kwargs`` go to :func:`~interplab.analysis.probes.probe`.

    Example:
        >>> import torch
        >>> E = torch.randn(80, 6, generator=torch.Generator().manual_seed(0))
        >>> res = property_probes(E, {"first_positive": E[:, 0] > 0, "sum": E.sum(1)}, n_splits=2, alpha=1e-3)
        >>> res["first_positive"].mean > 0.9, round(res["sum"].mean, 3)
        (True, 1.0)
    """
    out: dict[str, ProbeResult] = {}
    for name, values in properties.items():
        check(len(values) == len(E), f"Property {name} has {len(values)} values for {len(E)} embeddings.")
        if values.dtype == torch.bool:
            k = int(values.sum())
            if min(k, len(values) - k) < min_count:
                continue
            out[name] = probe(E, values.long(), kind="logistic", **probe_kwargs)
        else:
            out[name] = probe(E, values.double(), kind="ridge", **probe_kwargs)
    return out


def relation_consistency(E: Tensor, pairs: Sequence[tuple[int, int]], generator: torch.Generator | None = None
                         ) -> dict[str, float]:
    """Are the relation vectors ``E[dst] - E[src]`` of ``pairs`` consistent?

    Returns ``mean_cosine`` (mean cosine between the relation vectors of distinct pairs),
    ``shuffled_cosine`` (the same with the destinations shuffled among the pairs: the
    baseline), ``analogy_acc`` (for each pair, is ``E[src] + mean of the other pairs' relation
    vectors`` closer, by cosine, to its own ``dst`` than to every other pair's ``dst``; chance
    is ``1 / len(pairs)``) and ``chance``. Needs at least 3 pairs.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> src = torch.randn(6, 16, generator=g); rel = torch.randn(16, generator=g)
        >>> E = torch.cat([src, src + 2 * rel + 0.1 * torch.randn(6, 16, generator=g)])
        >>> r = relation_consistency(E, [(i, 6 + i) for i in range(6)], g)
        >>> r["mean_cosine"] > 0.9, r["analogy_acc"]
        (True, 1.0)
    """
    check(len(pairs) >= 3, f"relation_consistency needs at least 3 pairs, got {len(pairs)}.")
    src = torch.tensor([p[0] for p in pairs], device=E.device)
    dst = torch.tensor([p[1] for p in pairs], device=E.device)
    X = E.detach().double()

    def mean_cos(d: Tensor) -> float:
        c = pairwise_cosines(d)
        return float(c.mean())

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    rel = X[dst] - X[src]
    n = len(pairs)
    perm = (torch.arange(n) + torch.randint(1, n, (1,), generator=g)) % n  # a derangement: no pair keeps its dst
    shuffled = X[dst[perm.to(E.device)]] - X[src]
    total = rel.sum(0, keepdim=True)
    pred = X[src] + (total - rel) / (n - 1)
    cands = X[dst]
    cos = (pred / pred.norm(dim=1, keepdim=True)) @ (cands / cands.norm(dim=1, keepdim=True)).T
    acc = float((cos.argmax(1).cpu() == torch.arange(n)).double().mean())
    return {"mean_cosine": mean_cos(rel), "shuffled_cosine": mean_cos(shuffled), "analogy_acc": acc,
            "chance": 1.0 / n}


@torch.no_grad()
def truncation_similarity(model: Any, tokens: Tensor, site: str, prefix: Sequence[int] = (),
                          batch_size: int = 256) -> Tensor:
    """Cosine between each token's residual at ``site`` with its context and with no context.

    ``tokens``: ``[N, P]``. With context: the value at ``site`` at each position of the full
    sequence. Without: the value at the last position of ``[*prefix, token]`` (``prefix``,
    e.g. a BOS token, the same for every token), computed once per distinct token. Returns
    ``[N, P]`` cosines; the positions ``< len(prefix) + 1`` (no context to remove, or the
    prefix itself) are NaN. ``site`` must keep the position axis (``[batch, pos, d]``). The
    token alone sits at position ``len(prefix)``, so a model with learned position embeddings
    also sees a different position: compare categories of tokens, not absolute values.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=5, d_model=8, n_heads=2, d_mlp=16))
        >>> s = truncation_similarity(m, torch.tensor([[1, 2, 3, 4, 5]]), "hook_embed")
        >>> bool(s[0, 0].isnan()), bool(torch.allclose(s[0, 1:], torch.ones(4)))   # embeddings ignore context
        (True, True)
    """
    check(tokens.dim() == 2, f"tokens must have shape [N, pos], got {tuple(tokens.shape)}.")
    k = len(prefix)
    full = site_values(model, tokens, site, batch_size=batch_size)  # [N, P, d]
    check(full.dim() == 3, f"Site {site} has no [batch, pos, d] shape; pick a residual-stream site.")
    uniq, inverse = torch.unique(tokens, return_inverse=True)
    alone_in = torch.cat([torch.tensor(list(prefix), dtype=tokens.dtype, device=tokens.device).expand(len(uniq), k),
                          uniq[:, None]], 1)
    alone = site_values(model, alone_in, site, batch_size=batch_size, position=-1)[inverse]  # [N, P, d]
    cos = torch.nn.functional.cosine_similarity(full.double(), alone.double(), dim=-1)
    cos[:, :k + 1] = float("nan")
    return cos.to(full.dtype)


def index_in_word(strings: Sequence[str], space_markers: str = " \u0120\u2581") -> list[int]:
    """Each token's index within its word, for a sequence of token strings.

    A word starts at a token beginning with a space marker, at a token that is not alphabetic
    (punctuation, digits), and after such a token; alphabetic tokens without a marker continue
    the current word. The first token of a sequence has index 0.

    Example:
        >>> index_in_word(["\u0120The", "\u0120cap", "it", "al", "\u0120of", "\u0120Fr", "ance", "."])
        [0, 0, 1, 2, 0, 0, 1, 0]
    """
    out: list[int] = []
    prev_alpha = False
    for s in strings:
        body = s[1:] if s[:1] and s[0] in space_markers else s
        starts = (not out) or (s[:1] != "" and s[0] in space_markers) or not body.isalpha() or not prev_alpha
        out.append(0 if starts else out[-1] + 1)
        prev_alpha = body.isalpha()
    return out


def majority_category(ids: Sequence[Sequence[int]], categories: Sequence[Sequence[str]], d_vocab: int
                      ) -> list[str | None]:
    """Each token's most frequent category in annotated text (None for a token never seen).

    ``ids`` and ``categories``: sequences of token ids and, aligned with them, each token's
    category (e.g. :class:`interplab.lm.corpus.AnnotatedDoc` ``.ids`` and ``.categories``).
    Ties go to the category first seen. Returns a list of ``d_vocab`` entries. Raises if a
    sequence of ids and its categories differ in length or an id is outside the vocabulary.

    Example:
        >>> majority_category([[1, 2, 1], [1]], [["name", "word", "word"], ["name"]], 4)
        [None, 'name', 'word', None]
    """
    check(len(ids) == len(categories), f"{len(ids)} id sequences but {len(categories)} category sequences.")
    counts: list[dict[str, int]] = [{} for _ in range(d_vocab)]
    for seq, cats in zip(ids, categories):
        check(len(seq) == len(cats), f"Each token needs a category: {len(seq)} ids, {len(cats)} categories.")
        for t, c in zip(seq, cats):
            check(0 <= t < d_vocab, f"Token id {t} is outside the vocabulary of {d_vocab}.")
            counts[t][c] = counts[t].get(c, 0) + 1
    return [max(c, key=c.__getitem__) if c else None for c in counts]


def centred_norm_ratio(E: Tensor) -> float:
    """Norm of the mean embedding over the mean norm of the centred embeddings (how large the
    shared direction is). 0 for embeddings centred at the origin.

    Example:
        >>> import torch
        >>> round(centred_norm_ratio(torch.tensor([[1.0, 1.0], [1.0, -1.0]])), 3)
        1.0
    """
    X = E.detach().double()
    mu = X.mean(0)
    return float(mu.norm() / (X - mu).norm(dim=1).mean().clamp(min=1e-30))


__all__ = ["pairwise_cosines", "token_properties", "property_probes", "relation_consistency",
           "truncation_similarity", "index_in_word", "majority_category", "centred_norm_ratio"]

