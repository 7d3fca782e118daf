"""The language-model track, part 2: corpus, tokenizer, token files, LM training, sampling, lenses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interplab.errors import InterplabError
from interplab.lm.corpus import (CATEGORIES, FACT_FORMS, annotated_documents, fact_prompts, load_corpus,
                                 make_corpus)
from interplab.lm.generate import generate
from interplab.lm.tokenizer import (bos_id, decode, encode, encode_with_offsets, load_tokenizer, save_tokenizer,
                                    train_tokenizer)
from interplab.lm.tokens import TokenDataset, documents, tokenize_corpus, write_token_file
from interplab.models import Transformer, TransformerConfig


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    make_corpus(d, n_bytes=40_000, n_people=6, n_cities=4, n_countries=2, n_objects=4, seed=3, quiet=True)
    tokenize_corpus(d, vocab_size=400, quiet=True)
    return d


# -- corpus -----------------------------------------------------------------------------------

def test_corpus_is_deterministic_and_seeded(tmp_path, corpus_dir):
    make_corpus(tmp_path / "a", n_bytes=40_000, n_people=6, n_cities=4, n_countries=2, n_objects=4, seed=3, quiet=True)
    make_corpus(tmp_path / "b", n_bytes=40_000, n_people=6, n_cities=4, n_countries=2, n_objects=4, seed=4, quiet=True)
    for name in ("corpus.txt", "annotations.jsonl", "entities.json"):
        assert (tmp_path / "a" / name).read_bytes() == (corpus_dir / name).read_bytes()
    assert (tmp_path / "b" / "corpus.txt").read_bytes() != (corpus_dir / "corpus.txt").read_bytes()
    size = (corpus_dir / "corpus.txt").stat().st_size
    assert 40_000 <= size < 41_000


def test_annotation_covers_every_character_and_states_true_facts(corpus_dir):
    c = load_corpus(corpus_dir)
    tables = {"person": c.people, "city": c.cities, "object": c.objects}
    n_facts = 0
    for text, spans in zip(c.documents(), c.annotations()):
        covered = np.zeros(len(text), dtype=bool)
        for start, end, cat, entity, attribute in spans:
            assert cat in CATEGORIES
            assert not covered[start:end].any()  # spans do not overlap
            covered[start:end] = True
            piece = text[start:end]
            if attribute is not None:  # an attribute value: it is the entity's true value
                kind = FACT_FORMS[attribute][0]
                assert tables[kind][entity][attribute] == piece
                n_facts += 1
            elif cat in tables:  # a mention: the entity's own name
                assert piece == entity and entity in tables[cat]
            elif cat == "visitor":  # made up for this document, named again in it
                assert piece == entity and entity not in c.people and text.count(piece) >= 3
            elif cat == "chant":  # sung three times
                assert entity is None and text.count(piece) == 3
            elif cat == "country":
                assert piece in c.countries
            else:
                assert entity is None and " " not in piece
        assert all(ch == " " for ch in np.array(list(text))[~covered])
    assert n_facts > 100
    # every fact of the corpus is stated in its fixed form at least once
    whole = (corpus_dir / "corpus.txt").read_text()
    for p in fact_prompts(c):
        assert p.prompt + p.answer + "." in whole


def test_fact_prompts_cover_every_attribute_and_names_are_multi_token(corpus_dir):
    c = load_corpus(corpus_dir)
    prompts = fact_prompts(c)
    assert {p.attribute for p in prompts} == set(FACT_FORMS)
    assert len(prompts) == 3 * len(c.people) + len(c.cities) + len(c.objects)
    tok = load_tokenizer(corpus_dir)
    assert all(len(encode(tok, " " + name)) >= 2 for name in c.people)


def test_every_token_gets_its_category(corpus_dir):
    c = load_corpus(corpus_dir)
    tok = load_tokenizer(corpus_dir)
    doc = next(annotated_documents(c, tok))
    assert len(doc.ids) == len(doc.categories) == len(doc.entities)
    _, offsets = encode_with_offsets(tok, doc.text)
    for (s, e), cat, ent, attr in zip(offsets, doc.categories, doc.entities, doc.attributes):
        piece = doc.text[s:e].strip()
        if cat == "person":
            assert piece in ent
        if attr == "sport":
            assert piece and piece in c.people[ent]["sport"]
        if cat == "punct":
            assert piece == "."
    assert {"person", "word", "punct", "sport"} <= set(doc.categories)


def test_corpus_errors(tmp_path):
    with pytest.raises(InterplabError, match="n_countries"):
        make_corpus(tmp_path, n_bytes=5000, n_cities=2, n_countries=3)
    with pytest.raises(InterplabError, match="not a generated corpus"):
        load_corpus(tmp_path / "missing")


# -- tokenizer and token files -------------------------------------------------------------------

def test_tokenizer_roundtrip_offsets_and_errors(tmp_path):
    docs = ["Ada Lovel plays the sport of chess.", "Bo Rin lives in the city of Zanth."] * 30
    tok = train_tokenizer(docs, vocab_size=300)
    path = save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path)
    text = "Ada Lovel lives in the city of Zanth."
    assert encode(again, text) == encode(tok, text)
    assert decode(tok, encode(tok, text)) == " " + text  # byte-level BPE with a prefix space
    ids, offsets = encode_with_offsets(tok, text)
    assert "".join(text[s:e] for s, e in offsets) == text
    assert bos_id(tok) == 0 and 0 not in ids
    path.write_text("{not json")
    with pytest.raises(InterplabError, match="not a valid tokenizer"):
        load_tokenizer(path)
    with pytest.raises(InterplabError, match="at least 257"):
        train_tokenizer(docs, vocab_size=100)


def test_token_file_chunking_bos_and_memmap(tmp_path):
    docs = [" ".join(f"w{i % 7}" for i in range(k, k + 9)) for k in range(50)]
    tok = train_tokenizer(docs, vocab_size=300)
    path = write_token_file(iter(docs), tok, tmp_path / "tokens.bin", batch_docs=8, quiet=True)
    meta = json.loads((tmp_path / "tokens.bin.json").read_text())
    stream = np.fromfile(path, dtype=meta["dtype"])
    expected = [t for d in docs for t in (0, *encode(tok, d))]
    assert stream.tolist() == expected and meta["n_tokens"] == len(expected) and meta["n_documents"] == 50
    ds = TokenDataset(path, n_ctx=10)
    assert isinstance(ds.stream, np.memmap)
    assert len(ds) == len(expected) // 9
    rows = ds.rows(torch.arange(len(ds)))
    assert (rows[:, 0] == 0).all()
    assert rows[:, 1:].flatten().tolist() == expected[: 9 * len(ds)]
    # shuffling: a permutation of all rows, the same for the same seed, another for another seed
    a = torch.cat(list(ds.batches(7, torch.Generator().manual_seed(1))))
    b = torch.cat(list(ds.batches(7, torch.Generator().manual_seed(1))))
    c = torch.cat(list(ds.batches(7, torch.Generator().manual_seed(2))))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, rows.tolist()))
    # a truncated file is refused with a sentence
    with open(path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(InterplabError, match="does not match its header"):
        TokenDataset(path, n_ctx=10)


def test_documents_from_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\nthree\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x y"}\n{"body": "z"}\n')
    assert list(documents(tmp_path / "a.txt")) == ["one two", "three"]
    rows = documents(tmp_path / "b.jsonl")
    assert next(rows) == "x y"
    with pytest.raises(InterplabError, match="Line 2 .* no text field"):
        next(rows)
    tokenize_corpus(tmp_path / "out", vocab_size=260, source=tmp_path / "a.txt", quiet=True)
    assert TokenDataset(tmp_path / "out" / "tokens.bin", 2).meta["n_documents"] == 2


# -- training, resume, sampling ----------------------------------------------------------------

def _tiny(corpus_dir):
    from interplab.tasks.lm import LMTask

    task = LMTask(corpus_dir, n_ctx=32, rows_per_epoch=16, eval_rows=8)
    return task, task.default_model_config(d_model=32, n_heads=2, d_mlp=64)


def test_lm_training_step_and_exact_resume(tmp_path, corpus_dir):
    from interplab.train import TrainConfig, train

    task, cfg = _tiny(corpus_dir)
    tc = dict(lr=3e-3, weight_decay=0.1, batch_size=8, log_every=1, checkpoint_every=1, keep_history=False)
    full = Transformer(cfg, seed=0)
    r = train(full, task, TrainConfig(epochs=4, **tc), tmp_path / "full", quiet=True)
    assert r.metrics[-1]["train_loss"] < r.metrics[0]["train_loss"]
    assert {"test_loss", "fact_acc", "fact_acc_sport", "fact_acc_colour"} <= set(r.metrics[-1])
    part = Transformer(cfg, seed=0)
    train(part, task, TrainConfig(epochs=2, **tc), tmp_path / "part", quiet=True)
    # continue the same run to 4 epochs: rewrite the stored epoch count, then resume
    conf = json.loads((tmp_path / "part" / "config.json").read_text())
    state = torch.load(tmp_path / "part" / "checkpoints" / "state.pt", weights_only=False)
    state["finished"] = False
    torch.save(state, tmp_path / "part" / "checkpoints" / "state.pt")
    resumed = Transformer(cfg, seed=0)
    train(resumed, task, TrainConfig(epochs=4, **tc), tmp_path / "part", resume=True, quiet=True)
    assert conf["task"]["name"] == "lm"
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_make_task_rebuilds_the_lm_task(corpus_dir):
    from interplab.tasks import make_task

    task, _ = _tiny(corpus_dir)
    again = make_task(task.describe())
    assert again.describe() == task.describe() and torch.equal(again.test_rows, task.test_rows)


def test_sampling_is_seeded_and_greedy_is_argmax():
    m = Transformer(TransformerConfig(d_vocab=50, n_ctx=16, d_model=16, n_heads=2, d_mlp=32), seed=0)
    x = torch.tensor([[0, 5, 7], [0, 9, 1]])
    a = generate(m, x, 8, temperature=1.0, seed=5)
    assert torch.equal(a, generate(m, x, 8, temperature=1.0, seed=5))
    assert not torch.equal(a, generate(m, x, 8, temperature=1.0, seed=6))
    g = generate(m, x, 4, temperature=0.0)
    y = x
    for _ in range(4):
        y = torch.cat([y, m(y)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(g, y)
    top1 = generate(m, x, 4, temperature=2.0, top_k=1, seed=3)
    assert torch.equal(top1, g)
    with pytest.raises(InterplabError, match="temperature"):
        generate(m, x, 2, temperature=-1.0)


def test_fused_kernels_match_the_explicit_computation():
    cfg = TransformerConfig(d_vocab=30, n_ctx=24, d_model=32, n_layers=2, n_heads=4, d_mlp=64, act_fn="gelu",
                            normalization="LN")
    slow = Transformer(cfg, seed=1)
    fast = Transformer(TransformerConfig(**{**cfg.__dict__, "fused": True}), seed=1)
    x = torch.randint(30, (3, 20), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(slow(x), fast(x), atol=1e-5)
    assert torch.allclose(slow(x, positions=[3, -1]), fast(x, positions=[3, -1]), atol=1e-5)
    for m in (slow, fast):
        m(x).pow(2).mean().backward()
    for (name, p), q in zip(slow.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-4), name
    _, acts = fast.run_with_cache(x)  # hooks on the pattern: explicit path, same numbers
    assert torch.allclose(acts["blocks.1.hook_resid_post"], slow.run_with_cache(x)[1]["blocks.1.hook_resid_post"],
                          atol=1e-5)
