"""Embedding puzzles: cosine structure, token properties, relation vectors, context and word position.

Runs the analyses of :mod:`interplab.analysis.embeddings` on one language model and writes a
report with figures:

- pairwise cosine similarity of token embeddings before and after subtracting the mean
  embedding (against the same architecture at random initialisation);
- linear probes for token properties on the embeddings: length, leading space, capital, digit,
  and (one multinomial probe) the token's category in the generated corpus (a piece of a
  person's, city's or country's name, a sport, a colour, an ordinary word, punctuation: known
  because the text is generated, :mod:`interplab.lm.corpus`);
- relation vectors ``e(value) - e(entity)`` for the corpus's city -> country and object ->
  colour facts (a name of several tokens embedded as the mean of its tokens; the facts are
  random assignments, so a consistent vector would be a surprise: a negative control), and
  ``e(capital) - e(country)`` for real countries with a model given by ``--model``;
- the residual stream of each token with and without its preceding context (truncation), per
  layer and by corpus category, and for word starts against word continuations;
- a probe for a token's index within its word, per layer (emergent positional information).

The model: by default the corpus LM (:class:`interplab.tasks.lm.LMTask`, what ``interplab
train lm`` trains) on a generated corpus written to ``OUT/corpus``, trained into ``OUT/run``
(a finished run there with the same settings is reused; other settings are refused);
``--run RUN`` analyses a run of ``interplab train lm`` (its corpus and tokenizer are read
from the run's config); ``--model NAME_OR_DIR`` a Hugging Face causal LM through
:func:`interplab.lm.load`, on a generated corpus it has never seen, tokenized by its own
tokenizer. After Nanda et al. (2023), "Fact Finding" (Alignment Forum), post 5.

``results.json``: ``cosine_mean_raw``, ``cosine_mean_centred`` (and their spreads, trained and
random init), ``property_probe`` (property -> [trained, random init]), ``relation``,
``truncation_similarity`` (site -> category -> mean cosine), ``truncation_by_word_index``,
``word_index_probe`` (site -> accuracy).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import matplotlib.pyplot as plt
import numpy as np
import torch

from interplab.analysis.embeddings import (centred_norm_ratio, index_in_word, majority_category, pairwise_cosines,
                                           property_probes, relation_consistency, token_properties,
                                           truncation_similarity)
from interplab.analysis.probes import probe
from interplab.devices import Placement, to_host
from interplab.errors import check
from interplab.instrument import site_values
from interplab.io import read_json, write_results
from interplab.lm.corpus import AnnotatedDoc, annotated_documents, load_corpus, make_corpus
from interplab.lm.load import load_option
from interplab.lm.tokenizer import bos_id, encode, load_tokenizer, token_strings
from interplab.lm.tokens import tokenize_corpus
from interplab.models import Transformer
from interplab.options import parameter, setting, study_command
from interplab.report import Report, announce
from interplab.tasks.lm import LMTask
from interplab.train import TrainConfig, train_or_resume

# real countries and capitals: the relation-vector test for a pretrained model given with --model
COUNTRIES = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
             ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
             ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Russia", "Moscow"),
             ("China", "Beijing"), ("India", "Delhi"), ("Chile", "Santiago"), ("Cuba", "Havana")]


@dataclass(frozen=True)
class Settings:
    """What the study depends on; ``QUICK`` and ``FULL`` are the presets (corpus and LM sizes apply to the LM
    trained here; the corpus also gives the text analysed with ``--run`` and ``--model``)."""

    corpus_bytes: int = setting(1_500_000, "Bytes of generated corpus text.", ge=1000)
    people: int = setting(40, "People in the corpus.", ge=2)
    cities: int = setting(10, "Cities in the corpus.", ge=1)
    countries: int = setting(4, "Countries in the corpus (at most the number of cities).", ge=1)
    objects: int = setting(20, "Objects (each with a colour) in the corpus.", ge=1)
    vocab_size: int = setting(768, "BPE vocabulary of the LM trained here.", ge=300)
    n_ctx: int = setting(64, "Context length of the LM trained here.", ge=8)
    d_model: int = setting(128, "Width of the LM trained here.", ge=8)
    n_layers: int = setting(2, "Layers of the LM trained here.", ge=1)
    n_heads: int = setting(4, "Attention heads of the LM trained here.", ge=1)
    d_mlp: int = setting(512, "MLP width of the LM trained here.", ge=1)
    epochs: int = setting(300, "Training epochs of the LM trained here.", ge=1)
    rows_per_epoch: int = setting(64, "Rows of n_ctx tokens per epoch.", ge=1)
    batch_size: int = setting(16, "Rows per training batch.", ge=1)
    lr: float = setting(2e-3, "AdamW learning rate (cosine schedule).", gt=0)
    n_splits: int = setting(5, "Probe repetitions (train/test splits).", ge=1)
    max_tokens: int = setting(2000, "Tokens used for the cosine histograms.", ge=2)
    min_count: int = setting(5, "Tokens seen fewer times in the analysed text are left out.", ge=1)
    n_docs: int = setting(3000, "Corpus documents tokenized for token counts and categories.", ge=10)
    n_eval_docs: int = setting(200, "Documents (the last of those) for truncation and the word-index probe.", ge=2)
    eval_len: int = setting(32, "Tokens read from each evaluation document (shorter ones are skipped).", ge=4)
    seed: int = setting(0, "Seed of the corpus, the LM, the samples and the probe splits.", ge=0)


FULL = Settings()
QUICK = Settings(corpus_bytes=400_000, people=16, cities=6, countries=3, objects=10, vocab_size=512, d_model=64,
                 d_mlp=256, epochs=150, n_splits=3, n_docs=1500, n_eval_docs=120)


# -- the model and the text ---------------------------------------------------------------------------

def corpus_lm(s: Settings, out: Path, quiet: bool, placement: Placement | None = None) -> Path:
    """Make (or reuse) the corpus in ``out / "corpus"`` and train (or reuse) the corpus LM in ``out / "run"``
    on ``placement``'s device and dtype; returns the run directory (what ``--run`` takes)."""
    d = out / "corpus"
    want = {"n_bytes": s.corpus_bytes, "n_people": s.people, "n_cities": s.cities, "n_countries": s.countries,
            "n_objects": s.objects, "seed": s.seed}
    have = read_json(d / "entities.json").get("settings", {}) if (d / "entities.json").is_file() else {}
    tok_ok = (d / "tokenizer.json").is_file() and (d / "tokens.bin.json").is_file() \
        and read_json(d / "tokens.bin.json").get("vocab_size") == s.vocab_size
    if not (all(have.get(k) == v for k, v in want.items()) and tok_ok):
        check(s.countries <= s.cities, f"countries ({s.countries}) cannot exceed cities ({s.cities}).")
        make_corpus(d, n_bytes=s.corpus_bytes, n_people=s.people, n_cities=s.cities, n_countries=s.countries,
                    n_objects=s.objects, seed=s.seed, quiet=quiet)
        tokenize_corpus(d, vocab_size=s.vocab_size, quiet=quiet)
    task = LMTask(d, n_ctx=s.n_ctx, seed=s.seed, rows_per_epoch=s.rows_per_epoch)
    model = Transformer(task.default_model_config(d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                                                  d_mlp=s.d_mlp), seed=s.seed)
    if placement is not None:
        placement.apply(model)
    cfg = TrainConfig(epochs=s.epochs, lr=s.lr, weight_decay=0.1, betas=(0.9, 0.95), batch_size=s.batch_size,
                      schedule="cosine", warmup_epochs=max(1, s.epochs // 20), seed=s.seed,
                      log_every=max(1, s.epochs // 5), checkpoint_every=max(1, s.epochs // 5), keep_history=False)
    train_or_resume(model, task, cfg, out / "run", quiet=quiet)
    return out / "run"


def _load_run(run: Path, placement: Placement) -> tuple[Any, Any, Path]:
    """A run of the ``lm`` task: (model, tokenizer, corpus directory)."""
    from interplab.runs import load

    check((run / "config.json").is_file(), f"{run} is not a run directory (no config.json).")
    task = read_json(run / "config.json").get("task", {})
    check(isinstance(task, dict) and task.get("name") == "lm",
          f"{run} is not a run of the lm task (train one with `interplab train lm --corpus DIR`).")
    corpus = Path(task["corpus"])
    check((corpus / "entities.json").is_file(),
          f"The corpus {corpus} of {run} is not a generated corpus (no entities.json): its token categories are unknown.")
    return load(run, device=placement.torch_device, dtype=placement.torch_dtype), load_tokenizer(corpus), corpus


def _eval_rows(docs: Sequence[AnnotatedDoc], bos: int, length: int, n: int) -> tuple[torch.Tensor, list[list[str]]]:
    """The last ``n`` documents with at least ``length`` tokens: ``[BOS, first length tokens]`` and their
    categories (``bos`` first)."""
    long = [d for d in docs if len(d.ids) >= length][-n:]
    check(len(long) >= 2, f"Fewer than 2 documents have {length} tokens; lower eval_len.")
    rows = torch.tensor([[bos, *d.ids[:length]] for d in long])
    return rows, [["bos", *d.categories[:length]] for d in long]


def _phrase_pairs(E: torch.Tensor, tok: Any, pairs: Sequence[tuple[str, str]], exclude: set[int]
                  ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Each phrase of ``pairs`` (after a space) as the mean embedding of its tokens: ``[2 * n, d]`` rows, source
    ``i`` at ``2 i`` and destination at ``2 i + 1``, and the index pairs: one pair per destination (the first), so that
    an analogy has one right answer; pairs whose two ends coincide are left out."""
    rows, out, seen = [], [], set()
    for a, b in pairs:
        ia = [t for t in encode(tok, " " + a) if t not in exclude and t < len(E)]
        ib = [t for t in encode(tok, " " + b) if t not in exclude and t < len(E)]
        if ia and ib and ia != ib and b not in seen:
            seen.add(b)
            out.append((len(rows), len(rows) + 1))
            rows += [E[ia].mean(0), E[ib].mean(0)]
    return (torch.stack(rows) if rows else E[:0]), out


def run(out_dir: str | Path, run_dir: str | Path | None = None, model_name: str | None = None, quick: bool = False,
        settings: Settings | None = None, quiet: bool = False, device: str = "auto",
        dtype: str = "float32") -> dict[str, Any]:
    """Run the embedding analyses on one model; writes results.json and report.html into ``out_dir``.

    The model trains (or is loaded) and runs on ``device`` in ``dtype`` (recorded in results.json); the
    embedding matrix and the activations are analysed on the CPU in float32.

    ``run(out, quick=True)`` makes a corpus, trains the corpus LM and analyses it (about two
    minutes on 2 cores); ``run(out, run_dir=...)`` analyses a run of ``interplab train lm``,
    ``run(out, model_name=...)`` a Hugging Face model (``tests/test_studies_fact_finding_embeddings.py``
    runs tiny ones of each).

    Example:
        >>> QUICK.epochs < FULL.epochs, QUICK.vocab_size
        (True, 512)
    """
    t0 = time.perf_counter()
    s = settings if settings is not None else (QUICK if quick else FULL)
    check(run_dir is None or model_name is None, "Give --run or --model, not both.")
    placement = Placement(device, dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_name is not None:  # load first: a model that cannot be loaded should not cost a corpus
        model, tok = load_option(model_name, device=device, dtype=dtype)
        check(s.countries <= s.cities, f"countries ({s.countries}) cannot exceed cities ({s.cities}).")
        corpus = make_corpus(out / "corpus", n_bytes=s.corpus_bytes, n_people=s.people, n_cities=s.cities,
                             n_countries=s.countries, n_objects=s.objects, seed=s.seed, quiet=quiet).path
        source = f"Hugging Face model {model_name}"
    else:
        run_path = Path(run_dir) if run_dir is not None else corpus_lm(s, out, quiet, placement)
        model, tok, corpus = _load_run(run_path, placement)
        source = f"run {run_path}" + (" (the corpus LM, trained here)" if run_dir is None else "")
    model.eval()
    c = load_corpus(corpus)
    bos = bos_id(tok)
    docs = list(annotated_documents(c, tok, limit=s.n_docs))
    W_E = model.W_E.detach().float().cpu()
    V = W_E.shape[0]
    strings = token_strings(tok, range(V))
    category = majority_category([d.ids for d in docs], [d.categories for d in docs], V)
    counts = torch.bincount(torch.tensor([t for d in docs for t in d.ids]), minlength=V)[:V]
    keep = (counts >= s.min_count) & (torch.arange(V) != bos)  # tokens seen often enough in the text, never BOS
    check(int(keep.sum()) >= 10, "Fewer than 10 tokens are frequent enough to analyse; lower min_count.")
    kept = keep.nonzero().flatten().tolist()
    init = Transformer(model.cfg, seed=s.seed + 1) if isinstance(model, Transformer) else None
    E = {"trained": W_E}
    if init is not None:
        E["random init"] = init.W_E.detach().float()
    g = torch.Generator().manual_seed(s.seed)
    results: dict[str, Any] = {"source": source, "d_vocab": V, "d_model": W_E.shape[1], "n_tokens_analysed": len(kept),
                               "settings": dataclasses.asdict(s)}

    # cosine structure
    cos = {k: {c_: pairwise_cosines(e[keep], center=c_, max_tokens=s.max_tokens, generator=g) for c_ in (False, True)}
           for k, e in E.items()}
    for name, centred in (("raw", False), ("centred", True)):
        results[f"cosine_mean_{name}"] = {k: float(v[centred].mean()) for k, v in cos.items()}
        results[f"cosine_std_{name}"] = {k: float(v[centred].std()) for k, v in cos.items()}
    results["mean_embedding_norm_ratio"] = centred_norm_ratio(W_E[keep])

    # token properties: spelling, and the token's category in the corpus
    props = token_properties([strings[i] for i in kept])
    props.pop("alpha")
    reg = {"C": [0.01, 0.1, 1.0, 10.0], "alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]}  # chosen by cross-validation
    pp = {k: property_probes(e[keep], props, n_splits=s.n_splits, seed=s.seed, **reg) for k, e in E.items()}
    cats = [category[i] for i in kept]  # one multinomial probe over the categories with enough tokens
    common = sorted(x for x in set(cats) - {None} if cats.count(x) >= max(s.min_count, s.n_splits + 1))
    rows_c = torch.tensor([x in common for x in cats])
    if len(common) >= 2:
        y = torch.tensor([common.index(x) for x in cats if x in common])
        for k, e in E.items():
            pp[k]["corpus category"] = probe(e[keep][rows_c], y, n_splits=s.n_splits, seed=s.seed, C=reg["C"])
        results["category_classes"] = {x: cats.count(x) for x in common}
    results["property_probe"] = {k: [r.mean, pp["random init"][k].mean if "random init" in pp else None]
                                 for k, r in pp["trained"].items()}
    results["property_probe_chance"] = {k: r.chance for k, r in pp["trained"].items()}

    # relation vectors: corpus facts between single tokens; real capitals for a pretrained model
    facts = {"city -> country": list(c.attributes["country"].items()),
             "object -> colour": list(c.attributes["colour"].items())}
    if model_name is not None:
        facts["country -> capital"] = COUNTRIES
    results["relation_pairs"], results["relation"] = {}, {}
    for rel, named in facts.items():
        for k, e in E.items():  # a name of several tokens: the mean of their embeddings
            P, pairs = _phrase_pairs(e, tok, named, {bos})
            results["relation_pairs"][rel] = len(pairs)
            if len(pairs) >= 3:
                results["relation"].setdefault(rel, {})[k] = relation_consistency(P, pairs, g)

    # context: truncation similarity per layer and category; word-index probe
    rows, row_cats = _eval_rows(docs, bos, min(s.eval_len, int(model.cfg.n_ctx) - 1), s.n_eval_docs)  # BOS + tokens
    cat_arr = np.array(row_cats)
    widx = torch.tensor([index_in_word(token_strings(tok, row[1:])) for row in rows.tolist()])
    widx = torch.cat([torch.zeros(len(rows), 1, dtype=torch.long), widx], 1)  # BOS: left out below
    sites = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    trunc, by_index = {}, {}
    for site in sites[1:]:
        sim = to_host(truncation_similarity(model, rows, site, prefix=[bos])).float().numpy()
        trunc[site] = {cat: float(np.nanmean(sim[cat_arr == cat])) for cat in sorted(set(cat_arr.flatten()) - {"bos"})
                       if np.isfinite(sim[cat_arr == cat]).any()}
        by_index[site] = {name: float(np.nanmean(sim[(mask & (cat_arr != "bos"))]))
                          for name, mask in (("word start", widx.numpy() == 0), ("continuation", widx.numpy() > 0))}
    results["truncation_similarity"], results["truncation_by_word_index"] = trunc, by_index
    alpha = np.array([[x.strip().isalpha() for x in ["", *token_strings(tok, row[1:])]] for row in rows.tolist()])
    per_pos = to_host(site_values(model, rows, sites))  # {site: [N, P, d]}
    target = widx[torch.from_numpy(alpha)].clamp(max=2)  # 0, 1, 2 or more
    wi = {site: probe(a.float()[torch.from_numpy(alpha)], target, n_splits=s.n_splits, seed=s.seed)
          for site, a in per_pos.items()}
    results["word_index_probe"] = {k: v.mean for k, v in wi.items()}
    results["word_index_chance"] = next(iter(wi.values())).chance
    results["word_index_counts"] = {str(k): int((target == k).sum()) for k in range(3)}
    results.update(placement.record())
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_results(out, results)
    path = _report(results, cos, pp).save(out / "report.html")
    line = (f"embeddings ({source}): mean cosine raw {results['cosine_mean_raw']['trained']:.3f}, centred "
            f"{results['cosine_mean_centred']['trained']:.3f}; property probes " + ", ".join(
                f"{k} {v[0]:.2f}" for k, v in results["property_probe"].items()))
    line2 = ("truncation cosine (last layer) word start {:.2f}, continuation {:.2f}; word-index probe ".format(
        *by_index[sites[-1]].values()) + ", ".join(f"{k.replace('hook_', '')} {v:.2f}"
                                                   for k, v in results["word_index_probe"].items()))
    announce([line, line2], path)
    return results


def _short(site: str) -> str:
    return site.replace("blocks.", "").replace("hook_", "")


def _report(results: dict[str, Any], cos: dict[str, dict[bool, torch.Tensor]], pp: dict[str, dict[str, Any]]) -> Report:
    r = Report("Embedding puzzles", subtitle=f"Model: {results['source']}")
    last = list(results["truncation_by_word_index"])[-1]
    r.numbers({"mean cosine (raw)": results["cosine_mean_raw"]["trained"],
               "mean cosine (centred)": results["cosine_mean_centred"]["trained"],
               "|mean embedding| / mean centred norm": results["mean_embedding_norm_ratio"],
               f"truncation cosine, word starts ({_short(last)})": results["truncation_by_word_index"][last]["word start"],
               f"truncation cosine, continuations ({_short(last)})":
                   results["truncation_by_word_index"][last]["continuation"],
               "seconds": results["seconds"]})

    r.section("Pairwise cosine similarity of token embeddings")
    r.text(f"{results['n_tokens_analysed']} of {results['d_vocab']} tokens are analysed (those seen at least "
           f"{results['settings']['min_count']} times in the corpus text). Mean cosine "
           f"{results['cosine_mean_raw']['trained']:.3f} raw and {results['cosine_mean_centred']['trained']:.3f} after "
           f"subtracting the mean embedding, whose norm is {results['mean_embedding_norm_ratio']:.2f} times the mean "
           "norm of the centred embeddings: a ratio near or above 1 means one shared direction makes all tokens look "
           "alike until it is removed.")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for ax, c in zip(axes, (False, True)):
        for k, v in cos.items():
            ax.hist(v[c].numpy(), bins=60, range=(-1, 1), alpha=0.6, label=k, density=True)
        ax.set_title("after subtracting the mean embedding" if c else "raw", fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=8)
    r.figure(fig, caption="Histograms of the cosine similarity of all token pairs (a random subset of tokens for "
                          "large vocabularies); a shared mean direction shifts the raw histogram to the right.")
    r.table(["embeddings", "mean (raw)", "std (raw)", "mean (centred)", "std (centred)"],
            [[k, results["cosine_mean_raw"][k], results["cosine_std_raw"][k], results["cosine_mean_centred"][k],
              results["cosine_std_centred"][k]] for k in cos])

    r.section("Token properties read linearly from the embeddings")
    r.text("Spelling properties of the token string, and the token's category in the generated corpus (the category "
           "of the spans it occurs in most often: pieces of names of people, cities, countries and objects, sports, "
           "colours, ordinary words, punctuation). A property is linearly encoded when the probe on the trained "
           "embeddings beats both chance and the same probe on randomly initialised embeddings (which can only "
           "memorise, not generalise to held-out tokens). Regularisation is chosen by cross-validation inside each "
           "training split.")
    tr, r0 = pp["trained"], pp.get("random init", {})
    r.table(["property", "probe (trained)", "std", "probe (random init)", "chance", "score"],
            [[k, v.mean, v.std, r0[k].mean if k in r0 else "", v.chance, "accuracy" if v.kind == "logistic" else "R^2"]
             for k, v in tr.items()],
            caption="Test score over random splits of the vocabulary (logistic: accuracy; ridge: R^2).")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(tr)), 3.2))
    names = list(tr)
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [tr[k].mean for k in names], 0.4, label="trained")
    if r0:
        ax.bar(xs + 0.2, [r0[k].mean if k in r0 else 0 for k in names], 0.4, label="random init")
    ax.scatter(xs, [tr[k].chance for k in names], color="k", marker="_", s=300, label="chance", zorder=3)
    ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy / R^2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    r.figure(fig, caption="Probe scores per token property.")

    r.section("Relation vectors")
    rel = results["relation"]
    r.text("For pairs (entity, value) whose two ends are single tokens: are the vectors e(value) - e(entity) "
           "consistent (mean cosine between them, against a shuffled pairing), and does e(entity) plus the mean "
           "relation vector of the other pairs land nearest its own value (analogy accuracy)? In the generated corpus "
           "a city's country and an object's colour are random assignments, so there is no shared direction to "
           "find unless the geometry of the embeddings makes one; real country -> capital pairs are tried on a "
           "pretrained model. Pairs available: " + ", ".join(f"{k} {v}" for k, v in results["relation_pairs"].items())
           + ".")
    if rel:
        r.table(["relation", "embeddings", "mean cosine of relation vectors", "shuffled pairing", "analogy accuracy",
                 "chance"], [[name, k, v["mean_cosine"], v["shuffled_cosine"], v["analogy_acc"], v["chance"]]
                             for name, by in rel.items() for k, v in by.items()])
    else:
        r.text("No relation has three single-token pairs in this vocabulary; nothing to measure.")

    r.section("Residual stream with and without preceding context")
    trc, wbi = results["truncation_similarity"], results["truncation_by_word_index"]
    r.text("The cosine between a token's residual stream in its document and with the context removed (the token "
           "alone after BOS). A low cosine means the representation at that layer depends on the context; the later "
           "tokens of a multi-token word or name are expected to depend on it more than word starts (the early layers "
           "detokenise them).")
    layers = list(trc)
    cats = sorted({c for v in trc.values() for c in v})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for i, c in enumerate(cats):
        axes[0].plot(range(len(layers)), [trc[x].get(c, np.nan) for x in layers], "o-", label=c, color=plt.cm.tab20(i % 20))
    for c in ("word start", "continuation"):
        axes[1].plot(range(len(layers)), [wbi[x][c] for x in layers], "o-", label=c)
    for ax, title in zip(axes, ("by corpus category", "by index within the word")):
        ax.set_xticks(range(len(layers)), [_short(x) for x in layers])
        ax.set_ylabel("cosine(with context, alone)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    r.figure(fig, caption="Mean truncation cosine per layer, by the token's category in the corpus (left) and for "
                          "word starts against later tokens of a word (right).")
    r.table(["site"] + cats + ["word start", "continuation"],
            [[x] + [trc[x].get(c, "") for c in cats] + [wbi[x]["word start"], wbi[x]["continuation"]] for x in layers])

    r.section("Probe for a token's index within its word")
    wi = results["word_index_probe"]
    r.text("At the embedding the probe can only use the token's identity (e.g. tokens with a leading space always "
           "start a word); accuracy above that level in later layers is positional information the model computes "
           "from context. Chance is the majority class.")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(len(wi)), list(wi.values()), "o-")
    ax.axhline(results["word_index_chance"], color="gray", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(wi)), [_short(x) for x in wi])
    ax.set_ylabel("probe test accuracy")
    ax.legend(fontsize=8)
    r.figure(fig, caption="Logistic probe for the index of a token within its word (0, 1, 2 or more), on the "
                          f"alphabetic tokens of corpus documents (counts {results['word_index_counts']}).")
    return r


cli = study_command(
    Settings, run, {"full": FULL, "quick": QUICK}, settings_arg="settings",
    doc="Embedding puzzles: cosine structure, token properties, relation vectors, context and word position.",
    extra=[parameter("run_dir", Optional[Path], None, "A run of `interplab train lm` to analyse (default: train the "
                     "corpus LM here).", flag="--run"),
           parameter("model_name", Optional[str], None, "A Hugging Face causal LM (hub name or local directory).",
                     flag="--model")])


__all__ = ["Settings", "QUICK", "FULL", "run", "cli", "corpus_lm", "COUNTRIES"]
