"""Embedding analyses: centring, property probes, relation vectors, truncation, index in word."""

import pytest
import torch

from interplab.analysis.embeddings import (index_in_word, pairwise_cosines, property_probes, relation_consistency,
                                           token_properties, truncation_similarity)
from interplab.errors import InterplabError
from interplab.models import Transformer, TransformerConfig


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_centring_removes_a_shared_direction():
    E = torch.randn(300, 32, generator=_g(0)) + 4.0 * torch.randn(32, generator=_g(1))
    raw, centred = pairwise_cosines(E), pairwise_cosines(E, center=True)
    assert raw.mean() > 0.8 and centred.mean().abs() < 0.02
    assert len(raw) == 300 * 299 // 2
    assert len(pairwise_cosines(E, max_tokens=50, generator=_g(2))) == 50 * 49 // 2


def test_property_probes_find_a_planted_property_and_not_a_random_one():
    E = torch.randn(400, 16, generator=_g(3))
    planted = E[:, 3] > 0.5
    noise = torch.rand(400, generator=_g(4)) > 0.5
    res = property_probes(E, {"planted": planted, "noise": noise, "length": 2 * E[:, 1] + 5,
                              "rare": torch.arange(400) < 3}, n_splits=3, alpha=[0.1, 1.0])
    assert res["planted"].mean > 0.95 and res["noise"].mean < 0.62 and res["length"].mean > 0.99
    assert "rare" not in res  # too few positives to probe


def test_token_properties_and_index_in_word():
    p = token_properties(["\u0120The", "cap", "\u0120Fr", "ance", ",", "\u01201987"])
    assert p["leading_space"].tolist() == [True, False, True, False, False, True]
    assert p["capital"].tolist() == [True, False, True, False, False, False]
    assert p["digit"].tolist() == [False] * 5 + [True]
    assert p["length"].tolist() == [3.0, 3.0, 2.0, 4.0, 1.0, 4.0]
    assert index_in_word(["\u0120un", "believ", "able", ",", "\u0120it", "\u0120rains", "ing"]) == [0, 1, 2, 0, 0, 0, 1]
    assert index_in_word(["in", "side", "."]) == [0, 1, 0]


def test_relation_consistency_against_shuffled_pairs():
    src = torch.randn(8, 32, generator=_g(5))
    rel = 3 * torch.randn(32, generator=_g(6))
    consistent = torch.cat([src, src + rel + 0.3 * torch.randn(8, 32, generator=_g(7))])
    pairs = [(i, 8 + i) for i in range(8)]
    r = relation_consistency(consistent, pairs, _g(0))
    assert r["mean_cosine"] > 0.8 and r["analogy_acc"] == 1.0 and r["chance"] == 1 / 8
    unrelated = torch.randn(16, 32, generator=_g(8))
    r0 = relation_consistency(unrelated, pairs, _g(0))
    assert r0["mean_cosine"] < 0.7 and abs(r0["mean_cosine"] - r0["shuffled_cosine"]) < 0.2
    with pytest.raises(InterplabError, match="at least 3 pairs"):
        relation_consistency(unrelated, pairs[:2])


def test_truncation_similarity_matches_an_explicit_computation():
    m = Transformer(TransformerConfig(d_vocab=9, n_ctx=6, d_model=16, n_layers=2, n_heads=2, d_mlp=32), seed=1)
    toks = torch.randint(1, 9, (4, 6), generator=_g(9))
    toks[:, 0] = 0  # BOS
    site = "blocks.1.hook_resid_post"
    sim = truncation_similarity(m, toks, site, prefix=[0])
    assert sim[:, :2].isnan().all() and not sim[:, 2:].isnan().any()
    _, full = m.run_with_cache(toks)
    _, alone = m.run_with_cache(torch.tensor([[0, int(toks[2, 4])]]))
    expected = torch.nn.functional.cosine_similarity(full[site][2, 4], alone[site][0, 1], dim=0)
    assert torch.isclose(sim[2, 4], expected, atol=1e-5)
    assert (sim[:, 2:] < 0.9999).any()  # attention mixes in the context
