"""Logit lens, QK/OV circuits, composition scores and head detectors on hand-checkable cases."""

from __future__ import annotations

import pytest
import torch

from interplab.analysis.circuits import composition_scores, ov_circuit, qk_circuit
from interplab.analysis.heads import (duplicate_token_mask, induction_mask, induction_scores, mask_scores,
                                      previous_token_scores, repeated_tokens, text_induction_scores)
from interplab.analysis.lens import answer_ranks, logit_lens
from interplab.errors import InterplabError
from interplab.models import Transformer, TransformerConfig


def _model(**kw):
    cfg = dict(d_vocab=11, n_ctx=12, d_model=16, n_layers=3, n_heads=2, d_mlp=32, normalization="LN")
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg), seed=0)


def test_logit_lens_rows_are_the_unembedded_residual_stream():
    m = _model()
    x = torch.randint(11, (4, 9), generator=torch.Generator().manual_seed(0))
    lens = logit_lens(m, x)
    assert lens.shape == (4, 4, 9, 11)  # embed + 3 layers
    assert torch.allclose(lens[-1], m(x), atol=1e-5)
    # the embed row by hand: LayerNorm(W_E[x] + W_pos) @ W_U + b_U
    resid = m.W_E[x] + m.W_pos[:9]
    by_hand = torch.nn.functional.layer_norm(resid, (16,), m.ln_final.w, m.ln_final.b) @ m.W_U + m.b_U
    assert torch.allclose(lens[0], by_hand, atol=1e-5)
    # a block whose attention and MLP write nothing leaves the lens unchanged
    with torch.no_grad():
        for p in (m.blocks[1].attn.W_O, m.blocks[1].attn.b_O, m.blocks[1].mlp.W_out, m.blocks[1].mlp.b_out):
            p.zero_()
    lens = logit_lens(m, x, positions=torch.tensor([8, 3, 0, -1]))
    assert lens.shape == (4, 4, 11) and torch.allclose(lens[1], lens[2])


def test_answer_ranks_by_hand():
    logits = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]]])  # [layer, batch, vocab]
    assert answer_ranks(logits, torch.tensor([2, 1])).tolist() == [[1, 0]]
    assert answer_ranks(logits, torch.tensor([1, 0])).tolist() == [[2, 2]]


def test_qk_and_ov_circuits_are_the_products_of_the_weights():
    m = _model(n_layers=2)
    a = m.blocks[1].attn
    qk = qk_circuit(m, 1, 1)
    assert torch.allclose(qk, m.W_E @ a.W_Q[1] @ a.W_K[1].T @ m.W_E.T, atol=1e-5)
    ov = ov_circuit(m, 0, 0, sources=torch.tensor([3, 4]))
    b = m.blocks[0].attn
    assert torch.allclose(ov, (m.W_E @ b.W_V[0] @ b.W_O[0] @ m.W_U)[[3, 4]], atol=1e-5)
    # the QK circuit is the attention score (before scaling) of a model without LN, biases and positions
    m2 = _model(n_layers=1, normalization="none", bias=False)
    with torch.no_grad():
        m2.W_pos.zero_()
    _, cache = m2.run_with_cache(torch.tensor([[2, 7]]))
    score = cache["blocks.0.attn.hook_attn_scores"][0, 1, 1, 0] * (8 ** 0.5)
    assert torch.allclose(score, qk_circuit(m2, 0, 1)[7, 2], atol=1e-4)
    with pytest.raises(InterplabError, match="layer must be"):
        qk_circuit(m, 5, 0)


def test_composition_scores_match_the_dense_formula():
    m = _model(n_layers=3, n_heads=3, d_model=12)
    w = [{k: getattr(m.blocks[la].attn, k).detach().double() for k in ("W_Q", "W_K", "W_V", "W_O")} for la in range(3)]
    fro = torch.linalg.matrix_norm
    for kind in ("q", "k", "v"):
        s = composition_scores(m, kind)
        assert s[2, :, 1].isnan().all() and s[1, :, 1].isnan().all()
        for la, ha, lb, hb in ((0, 1, 1, 2), (0, 0, 2, 1), (1, 2, 2, 0)):
            ov_a = w[la]["W_V"][ha] @ w[la]["W_O"][ha]
            qk_b = w[lb]["W_Q"][hb] @ w[lb]["W_K"][hb].T
            ov_b = w[lb]["W_V"][hb] @ w[lb]["W_O"][hb]
            num, den = {"q": (ov_a @ qk_b, fro(ov_a) * fro(qk_b)), "k": (qk_b @ ov_a.T, fro(ov_a) * fro(qk_b)),
                        "v": (ov_a @ ov_b, fro(ov_a) * fro(ov_b))}[kind]
            assert s[la, ha, lb, hb].item() == pytest.approx((fro(num) / den).item(), rel=1e-4)
    with pytest.raises(InterplabError, match="kind"):
        composition_scores(m, "x")


def test_head_masks_and_scores_by_hand():
    x = torch.tensor([[9, 1, 2, 1, 2]])
    assert duplicate_token_mask(x)[0].nonzero().tolist() == [[3, 1], [4, 2]]
    assert induction_mask(x)[0].nonzero().tolist() == [[3, 2], [4, 3]]
    # a pattern putting 0.6 on the key after an earlier copy and the rest on BOS
    p = torch.zeros(1, 1, 1, 5, 5)
    p[..., :, 0] = 1.0
    p[0, 0, 0, 3, 2], p[0, 0, 0, 3, 0] = 0.6, 0.4
    p[0, 0, 0, 4, 3], p[0, 0, 0, 4, 0] = 0.6, 0.4
    assert mask_scores(p, induction_mask(x)).item() == pytest.approx(0.6)
    assert mask_scores(p, duplicate_token_mask(x)).item() == pytest.approx(0.0)


def test_text_detectors_find_a_built_previous_token_and_induction_circuit():
    """Layer 0 head 0 attends to the previous position by construction (positional QK); the
    text detectors and the repeated-token detectors must agree on it."""
    n = 9
    m = Transformer(TransformerConfig(d_vocab=8, n_ctx=n, d_model=2 * n, n_layers=2, n_heads=2, d_mlp=None,
                                      bias=False), seed=0)
    with torch.no_grad():
        m.W_E.zero_()
        m.W_pos.copy_(torch.cat([torch.eye(n), torch.eye(n)], 1) * 10)
        W_Q, W_K = m.blocks[0].attn.W_Q, m.blocks[0].attn.W_K
        W_Q.zero_(), W_K.zero_()
        for i in range(1, n):  # query at i matches key at i - 1
            W_Q[0, i, i - 1] = 1.0
        W_K[0, :n, :n] = torch.eye(n)
    x = repeated_tokens(n_values=7, length=4, n=5, bos=7, seed=0)
    prev = previous_token_scores(m, x)
    assert prev[0, 0].item() > 0.99 and prev[0, 1].item() < 0.5
    assert torch.allclose(text_induction_scores(m, torch.tensor([[7, 0, 1, 2, 3, 0, 1, 2, 3]])),
                          induction_scores(m, torch.tensor([[7, 0, 1, 2, 3, 0, 1, 2, 3]]), length=4))
