"""Automated interpretability of SAE features: explain -> simulate -> score.

The method of Bills et al. 2023 ("Language models can explain neurons in language models"),
as used for SAE features by Anthropic ("Towards Monosemanticity") and by SAELens / sae-auto-interp:

1. **explain**: the explainer sees a feature's top-activating contexts as ``token<TAB>activation``
   lines (activations quantised to 0-10 by the feature's maximum) plus a few random contexts,
   and proposes the pattern in one phrase;
2. **simulate**: from the explanation alone, a simulator predicts each token's activation
   (0-10) on held-out contexts (top-activating and random ones, never shown to the explainer);
3. **score**: the Pearson correlation between predicted and true activations over all held-out
   tokens ("all at once" scoring).

Backends (:class:`Backend`) are pluggable: :class:`ChatBackend` talks to any OpenAI-compatible
chat-completions endpoint (URL, key, model name), and :class:`RuleBackend` works offline: it
explains a feature by the token predicate (a label such as ``category=sport`` or
``token=' tennis'``, e.g. the generated corpus's known token categories and entity
attributes) whose indicator correlates best with the feature on the explanation contexts, and
simulates by predicting 10 where the predicate holds.

Example:
    >>> ex = [Context(["a", "b", "c"], [0.0, 2.0, 0.0], [{"x"}, {"y"}, {"x"}])]
    >>> held = [Context(["b", "a"], [1.0, 0.0], [{"y"}, {"x"}])]
    >>> result = explain_and_score(RuleBackend(), ex, ex, held)
    >>> result["explanation"], result["score"]
    ('y', 1.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from interplab.errors import InterplabError, check


@dataclass
class Context:
    """One text context: its tokens (strings), the feature's activation on each, and optional
    labels per token (sets of predicate names, for :class:`RuleBackend`)."""

    tokens: list[str]
    acts: list[float]
    labels: list[set[str]] = field(default_factory=list)


def quantize(acts: Sequence[float], vmax: float) -> list[int]:
    """Activations as integers 0-10 relative to ``vmax`` (negative values count as 0).

    Example:
        >>> quantize([0.0, 0.26, 1.0, 2.0], 1.0)
        [0, 3, 10, 10]
    """
    if vmax <= 0:
        return [0 for _ in acts]
    return [int(max(0, min(10, round(10 * a / vmax)))) for a in acts]


def format_contexts(contexts: Sequence[Context], vmax: float) -> str:
    """The explainer's view: one ``token<TAB>activation`` line per token, contexts separated by a blank line.

    Example:
        >>> format_contexts([Context(["a", "b"], [0.0, 1.0])], 1.0)
        'a\\t0\\nb\\t10'
    """
    return "\n\n".join("\n".join(f"{t}\t{q}" for t, q in zip(c.tokens, quantize(c.acts, vmax))) for c in contexts)


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of two equal-length sequences (0 when either is constant).

    Example:
        >>> pearson([0, 1, 2], [0, 2, 4]), pearson([1, 1], [0, 1])
        (1.0, 0.0)
    """
    x, y = torch.tensor(list(a), dtype=torch.float64), torch.tensor(list(b), dtype=torch.float64)
    check(len(x) == len(y) and len(x) > 0, f"Correlation needs two equal, non-empty lengths, got {len(x)} and {len(y)}.")
    x, y = x - x.mean(), y - y.mean()
    den = (x.norm() * y.norm()).item()
    return 0.0 if den < 1e-12 else round((x @ y).item() / den, 12)


class Backend(Protocol):
    """An explainer and simulator."""

    def explain(self, top: Sequence[Context], random: Sequence[Context]) -> str:
        """One phrase describing what the feature responds to."""
        ...

    def simulate(self, explanation: str, context: Context) -> list[float]:
        """Predicted activation 0-10 of each token of ``context`` (its ``acts`` are not to be read)."""
        ...


class RuleBackend:
    """Offline explainer over token labels: the label whose indicator best correlates with the
    activations of the explanation contexts; simulation predicts 10 where the label is present.

    ``min_count``: labels seen on fewer tokens of the explanation contexts are not proposed.
    """

    def __init__(self, min_count: int = 1) -> None:
        self.min_count = min_count

    def explain(self, top: Sequence[Context], random: Sequence[Context]) -> str:
        contexts = [*top, *random]
        check(all(len(c.labels) == len(c.tokens) for c in contexts), "RuleBackend needs labels for every token.")
        acts = [a for c in contexts for a in c.acts]
        labels = [lab for c in contexts for lab in c.labels]
        counts: dict[str, int] = {}
        for lab in labels:
            for name in lab:
                counts[name] = counts.get(name, 0) + 1
        best, best_r = "", -math.inf
        for name in sorted(counts):
            if counts[name] < self.min_count:
                continue
            r = pearson([1.0 if name in lab else 0.0 for lab in labels], acts)
            if r > best_r:
                best, best_r = name, r
        return best

    def simulate(self, explanation: str, context: Context) -> list[float]:
        check(len(context.labels) == len(context.tokens), "RuleBackend needs labels for every token.")
        return [10.0 if explanation in lab else 0.0 for lab in context.labels]


EXPLAIN_PROMPT = (
    "We are studying a feature of a language model. Below are text excerpts, one token per line as "
    "token<TAB>activation (0 = inactive, 10 = its strongest). Describe in one short phrase what the "
    "feature responds to. Answer with the phrase only."
)
SIMULATE_PROMPT = (
    "A feature of a language model is explained as: {explanation}\n"
    "For each token below (one per line), predict the feature's activation from 0 to 10. "
    "Answer with exactly one line per token, as token<TAB>activation, in the same order."
)


class ChatBackend:
    """An OpenAI-compatible chat-completions endpoint as explainer and simulator.

    ``url`` is the API base (``.../v1``; ``/chat/completions`` is appended), ``key`` the bearer
    token (may be empty for local servers), ``model`` the model name. Requests use
    temperature 0. Network and protocol errors raise :class:`InterplabError`.
    """

    def __init__(self, url: str, key: str = "", model: str = "gpt-4o-mini", timeout: float = 60.0) -> None:
        self.url, self.key, self.model, self.timeout = url.rstrip("/"), key, model, timeout

    def chat(self, prompt: str) -> str:
        """Send one user message, return the reply's text."""
        import httpx

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        body = {"model": self.model, "temperature": 0, "messages": [{"role": "user", "content": prompt}]}
        try:
            r = httpx.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=self.timeout)
            r.raise_for_status()
            return str(r.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise InterplabError(f"The chat endpoint {self.url} failed: {str(e)[:120]}.") from None

    def explain(self, top: Sequence[Context], random: Sequence[Context]) -> str:
        vmax = max((a for c in top for a in c.acts), default=0.0)
        text = format_contexts([*top, *random], vmax)
        return self.chat(f"{EXPLAIN_PROMPT}\n\n{text}").strip().splitlines()[0].strip() if text else ""

    def simulate(self, explanation: str, context: Context) -> list[float]:
        reply = self.chat(SIMULATE_PROMPT.format(explanation=explanation) + "\n\n" + "\n".join(context.tokens))
        return parse_simulation(reply, len(context.tokens))


def parse_simulation(reply: str, n: int) -> list[float]:
    """The last number of each of the first ``n`` non-empty lines of ``reply`` (clipped to 0-10;
    missing lines predict 0).

    Example:
        >>> parse_simulation("a\\t3\\nb\\t12\\n", 3)
        [3.0, 10.0, 0.0]
    """
    out = []
    for line in [ln for ln in reply.splitlines() if ln.strip()][:n]:
        nums = re.findall(r"-?\d+(?:\.\d+)?", line.split("\t")[-1]) or re.findall(r"-?\d+(?:\.\d+)?", line)
        out.append(float(min(10.0, max(0.0, float(nums[-1])))) if nums else 0.0)
    return out + [0.0] * (n - len(out))


def explain_and_score(backend: Backend, top: Sequence[Context], random: Sequence[Context],
                      held_out: Sequence[Context]) -> dict[str, Any]:
    """Explain from ``top`` and ``random`` contexts, simulate ``held_out`` ones, score by correlation.

    Returns ``explanation``, ``score`` (Pearson correlation of simulated and true activations
    over every held-out token) and ``n_tokens``.

    Example: see the module docstring.
    """
    check(len(held_out) > 0, "Scoring needs at least one held-out context.")
    explanation = backend.explain(top, random)
    pred, true = [], []
    for c in held_out:
        p = backend.simulate(explanation, c)
        check(len(p) == len(c.tokens), f"The simulator returned {len(p)} values for {len(c.tokens)} tokens.")
        pred.extend(p)
        true.extend(c.acts)
    return {"explanation": explanation, "score": pearson(pred, true), "n_tokens": len(true)}


def feature_contexts(acts: Tensor, token_strs: Sequence[Sequence[str]], labels: Sequence[Sequence[set[str]]] | None,
                     n_top: int, n_random: int, window: tuple[int, int], generator: torch.Generator,
                     exclude: set[int] | None = None) -> tuple[list[Context], list[Context]]:
    """Top-activating and random contexts of one feature from its activations ``acts [N, T]``.

    A top context is the window around the maximum of one of the ``n_top`` sequences with the
    highest maximum; random contexts are windows at random positions of ``n_random`` random
    sequences. Sequences in ``exclude`` are skipped (to keep explanation and held-out apart).

    Example:
        >>> acts = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
        >>> top, rnd = feature_contexts(acts, [["a", "b", "c"], ["d", "e", "f"]], None, 1, 1, (1, 1),
        ...                             torch.Generator().manual_seed(0))
        >>> top[0].tokens, top[0].acts
        (['a', 'b', 'c'], [0.0, 3.0, 0.0])
    """
    N, T = acts.shape
    exclude = exclude or set()
    allowed = torch.tensor([i for i in range(N) if i not in exclude], dtype=torch.long, device=acts.device)
    check(len(allowed) > 0, "No sequences left to draw contexts from.")
    seq_max, seq_arg = acts.max(dim=1)
    order = allowed[seq_max[allowed].argsort(descending=True)]
    order = order[seq_max[order] > 0][:n_top]

    def ctx(n: int, t: int) -> Context:
        lo, hi = max(0, t - window[0]), min(T, t + window[1] + 1)
        labs = [set(x) for x in labels[n][lo:hi]] if labels is not None else []
        return Context(list(token_strs[n][lo:hi]), acts[n, lo:hi].tolist(), labs)

    top = [ctx(int(n), int(seq_arg[n])) for n in order]
    pick = allowed[torch.randperm(len(allowed), generator=generator)[:n_random]]
    rnd = [ctx(int(n), int(torch.randint(T, (1,), generator=generator))) for n in pick]
    return top, rnd


def autointerp(backend: Backend, acts: Tensor, token_strs: Sequence[Sequence[str]],
               labels: Sequence[Sequence[set[str]]] | None = None, n_top: int = 10, n_random: int = 5,
               n_held_top: int = 5, n_held_random: int = 5, window: tuple[int, int] = (10, 4),
               seed: int = 0) -> dict[str, Any]:
    """The whole pipeline for one feature with activations ``acts [N, T]`` on sequences whose
    tokens are ``token_strs [N][T]`` (and optional ``labels [N][T]``).

    The first half of the sequences (in a seeded random order) gives the explanation contexts,
    the other half the held-out ones. Returns :func:`explain_and_score`'s dict.

    Example:
        >>> acts = torch.zeros(8, 4); acts[:, 2] = 5.0
        >>> toks = [["a", "b", "X", "c"]] * 8
        >>> labels = [[{"a"}, {"b"}, {"X"}, {"c"}]] * 8
        >>> autointerp(RuleBackend(), acts, toks, labels, n_top=2, n_random=1, n_held_top=2, n_held_random=1)["score"]
        1.0
    """
    g = torch.Generator().manual_seed(seed)
    N = acts.shape[0]
    check(N >= 2, "autointerp needs at least two sequences (explanation and held-out halves).")
    perm = torch.randperm(N, generator=g).tolist()
    first, second = set(perm[: N // 2]), set(perm[N // 2:])
    top, rnd = feature_contexts(acts, token_strs, labels, n_top, n_random, window, g, exclude=second)
    held_top, held_rnd = feature_contexts(acts, token_strs, labels, n_held_top, n_held_random, window, g, exclude=first)
    return explain_and_score(backend, top, rnd, [*held_top, *held_rnd])


__all__ = ["Context", "Backend", "RuleBackend", "ChatBackend", "quantize", "format_contexts", "pearson",
           "parse_simulation", "explain_and_score", "feature_contexts", "autointerp"]
