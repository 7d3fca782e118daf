"""The computational graph of a hooked transformer, and patching of its edges.

Nodes (the names follow the EAP-IG / ACDC habit):

- senders: ``embed`` (token plus positional embedding), every head ``a{l}.h{h}`` (its output
  ``z_h @ W_O[h]``) and every MLP ``m{l}`` (``hook_mlp_out``);
- receivers: every head's query, key and value input ``a{l}.h{h}.q|k|v``, every MLP's input
  ``m{l}`` and the ``logits`` (the final residual stream).

Edges follow the residual stream: each receiver reads the sum of the outputs of every sender
before it (heads of layer ``l`` feed MLP ``l`` and all later layers), plus constant biases.
Patching edge ``s -> r`` means that ``r`` sees the *corrupted* (or mean) output of ``s`` in
place of its output in the current run, and nothing else changes: the receiver's input is
``resid + sum_{patched s} (corrupted_s - current_s)``; its query, key, value or MLP
pre-activation is recomputed from that input through the layer's own norm and weights. Many
edges are patched at once by a mask ``[n_receivers, n_senders]`` (1 = patched), which may
also be fractional and carry gradients: its gradient at zero is edge attribution patching.

The graph is written against TransformerLens hook names (``hook_embed``,
``blocks.{l}.hook_resid_pre``, ``attn.hook_q/k/v/z``, ``hook_resid_mid``, ``mlp.hook_pre``,
``hook_mlp_out``, ``hook_resid_post``) and the TL weight names (``ln1``, ``ln2``, ``W_Q``,
``b_Q``, ..., ``W_O``, ``W_in``, ``b_in``), so it runs unchanged on our ``Transformer`` and on
a TransformerBridge model in compatibility mode (:func:`interplab.lm.load`; checked against
explicit patching of the Hugging Face GPT-2 model in ``tests/test_lm_bridge.py``). The
``embed`` sender is the residual stream entering block 0 (token plus positional embedding, or
the token embedding alone with rotary positions). Models whose MLP runs in parallel with
attention, or whose key/value heads are grouped, are refused.

Example:
    >>> import torch
    >>> from interplab.models import Transformer, TransformerConfig
    >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=16, n_layers=2, n_heads=2, d_mlp=None))
    >>> g = Graph.from_model(m)
    >>> len(g.senders), len(g.receivers), g.n_edges
    (5, 13, 29)
    >>> clean, corrupt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 5, 3]])
    >>> corr = sender_outputs(m, g, corrupt)
    >>> mask = g.mask()
    >>> mask[g.receiver_index("a1.h0.k"), g.sender_index("a0.h1")] = 1.0   # patch one edge
    >>> run_edges(m, g, clean, corr, mask).shape
    torch.Size([1, 4, 6])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interplab.errors import check

INPUTS = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    """Senders, receivers and the edges allowed between them (see the module docstring).

    ``allowed``: bool ``[n_receivers, n_senders]``, true where an edge exists.
    ``sender_layer`` / ``receiver_layer``: the layer of each node (``embed``: -1, ``logits``:
    ``n_layers``), for drawing.
    """

    n_layers: int
    n_heads: int
    has_mlp: bool
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    allowed: Tensor = field(repr=False)

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "Graph":
        """The graph of a hooked transformer, from ``model.cfg`` (``n_layers``, ``n_heads``, ``d_mlp``).

        Example: see the module docstring.
        """
        cfg = model.cfg
        L, H = int(cfg.n_layers), int(cfg.n_heads)
        check(not getattr(cfg, "parallel_attn_mlp", False),
              "The edge graph needs sequential blocks (each MLP reads its layer's attention output); this model "
              "runs attention and MLP in parallel.")
        n_kv = getattr(cfg, "n_key_value_heads", None)
        check(n_kv is None or int(n_kv) == H,
              f"The edge graph needs one key and value per head; this model groups {H} query heads over {n_kv} "
              f"key/value heads.")
        has_mlp = not bool(getattr(cfg, "attn_only", False)) and getattr(cfg, "d_mlp", None) is not None
        senders, receivers, reach = ["embed"], [], []  # reach: senders visible to each receiver
        for layer in range(L):
            n_before = len(senders)
            for kind in INPUTS:
                for h in range(H):
                    receivers.append(f"a{layer}.h{h}.{kind}")
                    reach.append(n_before)
            senders += [f"a{layer}.h{h}" for h in range(H)]
            if has_mlp:
                receivers.append(f"m{layer}")
                reach.append(len(senders))
                senders.append(f"m{layer}")
        receivers.append("logits")
        reach.append(len(senders))
        allowed = torch.arange(len(senders))[None, :] < torch.tensor(reach)[:, None]
        return cls(L, H, has_mlp, tuple(senders), tuple(receivers), allowed)

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return int(self.allowed.sum())

    def sender_index(self, name: str) -> int:
        """Index of a sender by name (``embed``, ``a0.h1``, ``m0``)."""
        check(name in self.senders, f"The graph has no sender named {name!r}.")
        return self.senders.index(name)

    def receiver_index(self, name: str) -> int:
        """Index of a receiver by name (``a1.h0.k``, ``m0``, ``logits``)."""
        check(name in self.receivers, f"The graph has no receiver named {name!r}.")
        return self.receivers.index(name)

    def mask(self, value: float = 0.0) -> Tensor:
        """A mask ``[n_receivers, n_senders]`` with ``value`` on every edge and 0 elsewhere."""
        return self.allowed.float() * value

    def edges(self, keep: Tensor | None = None) -> list[str]:
        """Edge names ``"sender->receiver"`` (all, or where bool ``keep`` is true), receivers in order."""
        keep = self.allowed if keep is None else keep & self.allowed
        return [f"{self.senders[s]}->{self.receivers[r]}" for r, s in torch.nonzero(keep).tolist()]

    def edge_set(self, names: list[str] | set[str]) -> Tensor:
        """Bool ``[n_receivers, n_senders]`` with the named edges set.

        Example:
            >>> import torch
            >>> from interplab.models import Transformer, TransformerConfig
            >>> g = Graph.from_model(Transformer(TransformerConfig(d_vocab=4, n_ctx=3, d_model=8, n_layers=1,
            ...                                                    n_heads=1, d_mlp=None)))
            >>> g.edges(g.edge_set(["embed->a0.h0.v", "a0.h0->logits"]))
            ['embed->a0.h0.v', 'a0.h0->logits']
        """
        out = torch.zeros_like(self.allowed)
        for name in names:
            s, sep, r = name.partition("->")
            check(sep == "->", f"An edge name looks like 'a0.h1->a1.h0.k', got {name!r}.")
            i, j = self.receiver_index(r), self.sender_index(s)
            check(bool(self.allowed[i, j]), f"There is no edge {name!r} in the graph.")
            out[i, j] = True
        return out

    def receiver_node(self, r: int) -> int | None:
        """The sender index of the node a receiver belongs to (a head or MLP), None for logits."""
        name = self.receivers[r]
        if name == "logits":
            return None
        return self.senders.index(name.rsplit(".", 1)[0] if name[0] == "a" else name)

    def layer_of(self, name: str) -> float:
        """Drawing layer of a node: embed -1, heads ``l``, MLPs ``l + 0.5``, logits ``n_layers``."""
        if name == "embed":
            return -1.0
        if name == "logits":
            return float(self.n_layers)
        layer = int(name[1:].split(".")[0])
        return layer + (0.5 if name[0] == "m" else 0.0)


class _EdgeRun:
    """Hooks for one forward pass with patched edges (see :func:`run_edges`)."""

    def __init__(self, model: torch.nn.Module, graph: Graph, corrupted: Tensor | None, mask: Tensor | None,
                 reference: Tensor | None, embed_override: Tensor | None) -> None:
        self.model, self.g = model, graph
        self.corrupted, self.mask, self.reference = corrupted, mask, reference
        self.embed_override = embed_override
        self.outs: list[Tensor] = []  # sender outputs of this run, [b, p, d] each, in sender order
        self.resid: Tensor | None = None
        self.row = {name: i for i, name in enumerate(graph.receivers)}

    def _delta(self, rows: list[int]) -> Tensor | None:
        """``sum_s mask[r, s] (corrupted_s - current_s)`` for receivers ``rows``: ``[b, p, r, d]``."""
        if self.mask is None or self.corrupted is None:
            return None
        m = self.mask[rows][:, : len(self.outs)]
        if not m.requires_grad and not bool(m.any()):
            return None
        base = self.reference if self.reference is not None else torch.stack(self.outs, 2)
        diff = self.corrupted[:, :, : len(self.outs)] - base[:, :, : len(self.outs)]
        return torch.einsum("rs,bpsd->bprd", m.to(diff.dtype), diff)

    def hooks(self) -> list[tuple[str, Callable[..., Any]]]:
        g, model = self.g, self.model
        hooks: list[tuple[str, Callable[..., Any]]] = []

        # reading hooks return the tensor they keep: a bridge hands hooks views, and the pass (and
        # its gradients) must go through the very tensor recorded here
        def embed(act: Tensor, hook: Any) -> Tensor:
            return act if self.embed_override is None else self.embed_override.to(act.dtype)

        def embed_out(act: Tensor, hook: Any) -> Tensor:  # token (+ positional) embedding: the first sender
            self.outs.append(act)
            self.resid = act
            return act

        hooks += [("hook_embed", embed), ("blocks.0.hook_resid_pre", embed_out)]
        for layer in range(g.n_layers):
            block = model.blocks[layer]
            attn = block.attn

            def save_resid(act: Tensor, hook: Any) -> Tensor:
                self.resid = act
                return act

            def qkv(act: Tensor, hook: Any, layer: int = layer, kind: str = "q") -> Tensor:
                rows = [self.row[f"a{layer}.h{h}.{kind}"] for h in range(g.n_heads)]
                delta = self._delta(rows)
                if delta is None:
                    return act
                a = model.blocks[layer].attn
                x = model.blocks[layer].ln1(self.resid[:, :, None, :] + delta)  # [b, p, head, d_model]
                W, b = getattr(a, f"W_{kind.upper()}"), getattr(a, f"b_{kind.upper()}", None)
                out = torch.einsum("bphd,hde->bphe", x, W)
                return out + b if b is not None else out

            def z(act: Tensor, hook: Any, attn: Any = attn) -> Tensor:
                heads = torch.einsum("bphe,hed->bphd", act, attn.W_O)  # each head's output
                self.outs.extend(heads.unbind(2))
                return act

            if layer > 0:
                hooks.append((f"blocks.{layer}.hook_resid_pre", save_resid))
            for kind in INPUTS:
                hooks.append((f"blocks.{layer}.attn.hook_{kind}",
                              lambda act, hook, layer=layer, kind=kind: qkv(act, hook, layer, kind)))
            hooks.append((f"blocks.{layer}.attn.hook_z", z))
            if g.has_mlp:
                def mlp_in(act: Tensor, hook: Any, layer: int = layer) -> Tensor:
                    delta = self._delta([self.row[f"m{layer}"]])
                    if delta is None:
                        return act
                    mlp = model.blocks[layer].mlp
                    pre = model.blocks[layer].ln2(self.resid + delta[:, :, 0]) @ mlp.W_in
                    b = getattr(mlp, "b_in", None)
                    return pre + b if b is not None else pre

                def mlp_out(act: Tensor, hook: Any) -> Tensor:
                    self.outs.append(act)
                    return act

                hooks += [(f"blocks.{layer}.hook_resid_mid", save_resid), (f"blocks.{layer}.mlp.hook_pre", mlp_in),
                          (f"blocks.{layer}.hook_mlp_out", mlp_out)]

        def logits_in(act: Tensor, hook: Any) -> Tensor:
            delta = self._delta([self.row["logits"]])
            return act if delta is None else act + delta[:, :, 0]

        hooks.append((f"blocks.{g.n_layers - 1}.hook_resid_post", logits_in))
        return hooks


def run_edges(model: torch.nn.Module, graph: Graph, tokens: Tensor, corrupted: Tensor | None = None,
              mask: Tensor | None = None, reference: Tensor | None = None, embed: Tensor | None = None,
              return_senders: bool = False, fwd_hooks: list[tuple[str, Callable[..., Any]]] | None = None) -> Any:
    """Run ``model`` on ``tokens`` with the edges in ``mask`` patched to ``corrupted`` sender outputs.

    ``corrupted``: sender outputs ``[batch or 1, pos, n_senders, d_model]`` (from
    :func:`sender_outputs` on corrupted inputs, or :func:`mean_sender_outputs`); ``mask``:
    ``[n_receivers, n_senders]``, 1 = the receiver sees the corrupted value of that sender
    (fractions interpolate; gradients flow to ``mask``). ``reference``: fixed sender outputs
    to patch *from* in place of this run's own (used by EAP-IG, whose edge differences are
    clean minus corrupted whatever the input). ``embed``: replaces the token embedding
    (``hook_embed``), e.g. an interpolation between clean and corrupted inputs. Returns the
    logits ``[batch, pos, d_vocab_out]``, and with ``return_senders`` also this run's sender
    outputs ``[batch, pos, n_senders, d_model]``. ``fwd_hooks``: more hooks, run after the
    graph's own at the same sites (e.g. to read the patched queries and patterns).

    Example: see the module docstring.
    """
    check(tokens.dim() == 2, f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}.")
    if mask is not None:
        check(corrupted is not None, "Patching edges needs the corrupted sender outputs.")
        check(tuple(mask.shape) == tuple(graph.allowed.shape),
              f"mask must have shape {tuple(graph.allowed.shape)}, got {tuple(mask.shape)}.")
        mask = mask.to(corrupted.device)  # a mask built on the CPU follows the activations' device
        mask = mask * graph.allowed.to(mask.device, mask.dtype)
    if corrupted is not None:
        check(corrupted.dim() == 4 and corrupted.shape[2] == len(graph.senders),
              f"corrupted sender outputs must be [batch, pos, {len(graph.senders)}, d_model], "
              f"got {tuple(corrupted.shape)}.")
    state = _EdgeRun(model, graph, corrupted, mask, reference, embed)
    logits = model.run_with_hooks(tokens, fwd_hooks=state.hooks() + list(fwd_hooks or []))
    if return_senders:
        return logits, torch.stack(state.outs, 2)
    return logits


def sender_outputs(model: torch.nn.Module, graph: Graph, tokens: Tensor) -> Tensor:
    """Every sender's output on ``tokens``: ``[batch, pos, n_senders, d_model]`` (no gradients).

    Example: see the module docstring.
    """
    with torch.no_grad():
        return run_edges(model, graph, tokens, return_senders=True)[1]


def mean_sender_outputs(model: torch.nn.Module, graph: Graph, tokens: Tensor) -> Tensor:
    """Mean sender outputs over a batch of (reference) inputs: ``[1, pos, n_senders, d_model]``.

    Patching with these is mean ablation of edges.

    Example:
        >>> import torch
        >>> from interplab.models import Transformer, TransformerConfig
        >>> m = Transformer(TransformerConfig(d_vocab=6, n_ctx=4, d_model=8, n_layers=1, n_heads=2, d_mlp=16))
        >>> g = Graph.from_model(m)
        >>> mean_sender_outputs(m, g, torch.randint(6, (5, 4), generator=torch.Generator().manual_seed(0))).shape
        torch.Size([1, 4, 4, 8])
    """
    return sender_outputs(model, graph, tokens).mean(0, keepdim=True)


__all__ = ["Graph", "run_edges", "sender_outputs", "mean_sender_outputs"]
