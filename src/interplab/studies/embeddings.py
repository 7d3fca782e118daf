"""Embedding puzzles: cosine structure, token properties, relation vectors, context and word position.

Runs the analyses of :mod:`interplab.analysis.embeddings` on one language model and writes a
report with figures:

- pairwise cosine similarity of token embeddings before and after subtracting the mean
  embedding (against the same architecture at random initialisation);
- linear probes for token properties (length, leading space, capital, digit) on the embeddings;
- relation vectors ``e(capital) - e(country)``: consistent across pairs, or no better than a
  shuffled pairing?
- the residual stream of each token with and without its preceding context (truncation), per
  layer and by token category (word start, word continuation, punctuation, number);
- a probe for a token's index within its word, per layer (emergent positional information).

The model: ``--run RUN`` (a run directory with a transformer; token strings from its
``tokenizer.json`` when present), ``--model NAME`` (a Hugging Face model through
``interplab.lm.load``, when this build has it), or by default a small LM trained here on a
tiny generated text with known facts (countries and capitals, people and where they live),
tokenised by a byte-level BPE trained on the same text. That stand-in is saved under
``OUT/lm`` (``tokenizer.json`` beside the model), so ``--run OUT/lm`` reuses it.

``results.json``: ``cosine_mean_raw``, ``cosine_mean_centred`` (and their spreads, trained and
random init), ``property_probe`` (property -> [trained, random init]), ``relation``,
``truncation_similarity`` (layer -> category -> mean cosine), ``word_index_probe`` (site -> accuracy).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import matplotlib.pyplot as plt
import numpy as np
import torch
import typer

from interplab.analysis.embeddings import (centred_norm_ratio, index_in_word, pairwise_cosines, property_probes,
                                           relation_consistency, token_properties, truncation_similarity)
from interplab.analysis.probes import probe, site_activations
from interplab.devices import Placement, to_host
from interplab.errors import InterplabError, check
from interplab.models import Transformer, TransformerConfig
from interplab.report import Report
from interplab.options import parameter, setting, study_command
from interplab.io import atomic_write_text, load_tensors, read_json, save_tensors, write_results
from interplab.runs import save_model
from interplab.tasks import Task, split_indices
from interplab.train import TrainConfig, train

BOS = "<|bos|>"

COUNTRIES = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
             ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
             ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Russia", "Moscow"),
             ("China", "Beijing"), ("India", "Delhi"), ("Chile", "Santiago"), ("Cuba", "Havana")]
FIRST = ["Anna", "Boris", "Clara", "Daniel", "Elena", "Felix", "Greta", "Hugo", "Ingrid", "Jonas", "Katarina",
         "Leopold", "Maximilian", "Natalia", "Oskar", "Penelope"]
LAST = ["Smith", "Moreau", "Rossi", "Garcia", "Tanaka", "Okafor", "Johansson", "Novak", "Petrov", "Schneider",
        "Delacroix", "Vanderbilt", "Kowalczyk", "Fitzgerald", "Takahashi", "Abernathy"]
ANIMALS = ["cat", "dog", "horse", "elephant", "butterfly", "crocodile", "penguin", "kangaroo", "rabbit", "tiger"]
ADJECTIVES = ["small", "enormous", "quiet", "magnificent", "curious", "unbelievable", "green", "old", "happy",
              "extraordinary"]
VERBS = ["sleeps", "runs", "waits", "disappears", "sings", "wanders", "eats", "hides"]
PLACES = ["river", "mountain", "library", "supermarket", "station", "garden", "hospital", "bridge"]


@dataclass(frozen=True)
class Settings:
    """What the study depends on; ``QUICK`` and ``FULL`` are the presets (used for the stand-in LM)."""

    n_sentences: int = setting(6000, "Sentences of generated text for the stand-in LM.", ge=10)
    vocab_size: int = setting(600, "BPE vocabulary of the stand-in LM.", ge=50)
    n_ctx: int = setting(32, "Context length of the stand-in LM.", ge=4)
    d_model: int = setting(96, "Stand-in LM width.", ge=8)
    n_layers: int = setting(2, "Stand-in LM layers.", ge=1)
    d_mlp: int = setting(384, "Stand-in LM MLP width.", ge=1)
    epochs: int = setting(30, "Stand-in LM training epochs.", ge=1)
    n_splits: int = setting(5, "Probe repetitions (train/test splits).", ge=1)
    max_tokens: int = setting(2000, "Tokens used for the cosine histograms.", ge=2)
    min_count: int = setting(5, "Tokens seen fewer times in the text are left out (untrained rows).", ge=1)
    n_eval_sequences: int = setting(200, "Sequences for truncation and the word-index probe.", ge=2)
    seed: int = setting(0, "Seed for the stand-in LM, the samples and the probe splits.", ge=0)


FULL = Settings()
QUICK = Settings(n_sentences=2500, d_model=64, d_mlp=256, epochs=12, n_splits=3, n_eval_sequences=120)


# -- the stand-in LM: generated text, BPE tokenizer, small transformer ------------------------------

def generate_text(n_sentences: int, seed: int) -> list[str]:
    """Sentences from templates over known facts (capitals, where people live), by seed.

    Example:
        >>> s = generate_text(3, seed=0)
        >>> len(s), all(x.endswith(".") for x in s)
        (3, True)
    """
    rng = random.Random(seed)
    people = {(f, l): rng.choice(COUNTRIES) for f in FIRST for l in LAST}  # each person lives in one country

    def one() -> str:
        k = rng.randrange(6)
        country, capital = rng.choice(COUNTRIES)
        (first, last), (home, home_capital) = rng.choice(list(people.items()))
        animal, adj = rng.choice(ANIMALS), rng.choice(ADJECTIVES)
        if k == 0:
            return f"The capital of {country} is {capital}."
        if k == 1:
            return f"{capital} is a city in {country}."
        if k == 2:
            return f"{first} {last} lives in {home_capital}, the capital of {home}."
        if k == 3:
            return f"In {rng.randrange(1900, 2030)}, {first} {last} visited {country} with a {adj} {animal}."
        if k == 4:
            return f"The {adj} {animal} {rng.choice(VERBS)} near the {rng.choice(PLACES)}."
        return f"{first} {last} has {rng.randrange(2, 99)} {animal}s and lives in {home}."

    return [one() for _ in range(n_sentences)]


def train_tokenizer(text: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (``tokenizers``) trained on ``text``, with a BOS token.

    Example:
        >>> tok = train_tokenizer(generate_text(200, 0), 300)
        >>> tok.token_to_id("<|bos|>")
        0
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    return tok


def _windows(ids: list[list[int]], n_ctx: int, bos: int) -> torch.Tensor:
    """Sentences packed into rows of ``n_ctx + 1`` tokens, each row starting with BOS."""
    rows, cur = [], [bos]
    for s in ids:
        if len(cur) + len(s) > n_ctx + 1:
            rows.append(cur + [bos] * (n_ctx + 1 - len(cur)))
            cur = [bos]
        cur = cur + s[: n_ctx]
    return torch.tensor(rows, dtype=torch.long)


def train_standin_lm(s: Settings, out: Path, quiet: bool,
                     placement: Placement | None = None) -> tuple[Transformer, Any, torch.Tensor, torch.Tensor]:
    """Train the stand-in LM into ``out / "lm"`` (model, ``tokenizer.json``, ``text.safetensors``: held-out rows
    and token counts) on ``placement``'s device and dtype; returns (model, tokenizer, held-out rows, token counts)."""
    text = generate_text(s.n_sentences, s.seed)
    tok = train_tokenizer(text, s.vocab_size)
    bos = tok.token_to_id(BOS)
    rows = _windows([e.ids for e in tok.encode_batch(text)], s.n_ctx, bos)
    n_ctx = rows.shape[1] - 1
    inputs, labels = rows[:, :-1], rows[:, 1:].clone()
    labels[labels == bos] = -100  # padding
    train_idx, test_idx = split_indices(len(rows), 0.9, s.seed)
    task = Task(name="standin-text", inputs=inputs, labels=labels, train_idx=train_idx, test_idx=test_idx,
                n_classes=tok.get_vocab_size(), positions=list(range(n_ctx)),
                params={"n_sentences": s.n_sentences, "vocab_size": s.vocab_size, "seed": s.seed})
    cfg = TransformerConfig(d_vocab=tok.get_vocab_size(), n_ctx=n_ctx, d_model=s.d_model, n_layers=s.n_layers,
                            n_heads=4, d_mlp=s.d_mlp, normalization="LN")
    model = Transformer(cfg, seed=s.seed)
    if placement is not None:
        placement.apply(model)
    res = train(model, task, TrainConfig(epochs=s.epochs, lr=3e-3, weight_decay=0.01, batch_size=64, seed=s.seed,
                                         log_every=max(1, s.epochs // 4), schedule="cosine", warmup_epochs=1),
                None, quiet=quiet)
    model.eval()
    counts = torch.bincount(inputs[train_idx].flatten(), minlength=tok.get_vocab_size())
    save_model(out / "lm", model, {"task": task.describe(), "final": res.final})
    atomic_write_text(out / "lm" / "tokenizer.json", tok.to_str())
    save_tensors(out / "lm" / "text.safetensors", {"eval": inputs[test_idx], "counts": counts})
    return model, tok, inputs[test_idx], counts


# -- loading a given model ------------------------------------------------------------------------------

def _load_run(run: Path, placement: Placement) -> tuple[Any, Any, torch.Tensor | None, torch.Tensor | None]:
    from interplab.runs import load

    model = load(run, device=placement.torch_device, dtype=placement.torch_dtype)
    check(hasattr(model, "W_E") and hasattr(model, "blocks"), f"{run} does not hold a transformer with an embedding.")
    tok = None
    if (run / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    rows, counts = None, None
    config = read_json(run / "config.json")
    if (run / "text.safetensors").is_file():  # a stand-in LM saved by this study
        text = load_tensors(run / "text.safetensors")
        rows, counts = text.get("eval"), text.get("counts")
    elif tok is None and isinstance(config.get("task"), dict):
        from interplab.tasks import make_task

        try:
            rows = make_task(config["task"]).inputs
        except InterplabError:
            rows = None
        if rows is not None and not rows.is_floating_point():
            counts = torch.bincount(rows.flatten(), minlength=model.cfg.d_vocab)
    return model, tok, rows, counts


def _load_hf(name: str, placement: Placement) -> Any:
    try:
        from interplab.lm import load as lm_load  # type: ignore[import-not-found]
    except ImportError:
        raise InterplabError(f"--model {name} needs interplab.lm.load, which this build does not have; "
                             "use --run RUN or no model option (a small LM trained here).") from None
    return lm_load(name, device=placement.torch_device, dtype=placement.torch_dtype)


# -- the study ---------------------------------------------------------------------------------------

def _categories(strings: list[str]) -> list[str]:
    idx = index_in_word(strings)
    out = []
    for s, i in zip(strings, idx):
        body = s[1:] if s[:1] in ("\u0120", " ", "\u2581") else s
        if s == BOS:
            out.append("bos")
        elif any(c.isdigit() for c in body):
            out.append("number")
        elif not body.isalpha():
            out.append("punctuation")
        elif i == 0:
            out.append("word start")
        else:
            out.append("word continuation")
    return out


def run(out_dir: str | Path, run_dir: str | Path | None = None, model_name: str | None = None, quick: bool = False,
        settings: Settings | None = None, quiet: bool = False, device: str = "auto",
        dtype: str = "float32") -> dict[str, Any]:
    """Run the embedding analyses on one model; writes results.json and report.html into ``out_dir``.

    The model trains (or is loaded) and runs on ``device`` in ``dtype`` (recorded in results.json); the
    embedding matrix is analysed on the CPU in float32.

    ``run(out, quick=True)`` trains the stand-in LM and takes about a minute on 2 cores;
    ``run(out, run_dir="OUT/lm")`` reuses it (``tests/test_studies_fact_finding_embeddings.py``
    runs a tiny one).

    Example:
        >>> QUICK.epochs < FULL.epochs, QUICK.vocab_size
        (True, 600)
    """
    t0 = time.perf_counter()
    s = settings if settings is not None else (QUICK if quick else FULL)
    check(run_dir is None or model_name is None, "Give --run or --model, not both.")
    placement = Placement(device, dtype)
    placement.torch_device  # noqa: B018 - a device this machine lacks is refused before anything runs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_name is not None:
        model = _load_hf(model_name, placement)
        tok, rows, counts = getattr(model, "tokenizer", None), None, None
        source = f"Hugging Face model {model_name}"
        check(tok is not None, f"Model {model_name} has no tokenizer.")
    elif run_dir is not None:
        model, tok, rows, counts = _load_run(Path(run_dir), placement)
        source = f"run {run_dir}"
    else:
        model, tok, rows, counts = train_standin_lm(s, out, quiet, placement)
        source = f"a small LM trained here on generated text (saved in {out / 'lm'})"
    g = torch.Generator().manual_seed(s.seed)
    W_E = model.W_E.detach().float().cpu()
    V = W_E.shape[0]
    init = Transformer(model.cfg, seed=s.seed + 1) if isinstance(model, Transformer) else None
    strings = _token_strings(tok, V)
    # the tokens analysed: seen at least min_count times in the text (when known), never BOS
    keep = torch.tensor([x != BOS for x in strings])
    if counts is not None:
        keep &= counts.cpu()[:V] >= s.min_count
    check(int(keep.sum()) >= 10, "Fewer than 10 tokens are frequent enough to analyse; lower min_count.")
    W_E_all, W_E = W_E, W_E[keep]
    W_E0 = init.W_E.detach()[keep] if init is not None else None
    kept_ids = keep.nonzero().flatten().tolist()
    results: dict[str, Any] = {"source": source, "d_vocab": V, "d_model": W_E.shape[1], "n_tokens_analysed": len(kept_ids),
                               "settings": dataclasses.asdict(s)}

    # cosine structure
    cos = {"trained": {c: pairwise_cosines(W_E, center=c, max_tokens=s.max_tokens, generator=g) for c in (False, True)}}
    if init is not None:
        cos["random init"] = {c: pairwise_cosines(W_E0, center=c, max_tokens=s.max_tokens, generator=g)
                              for c in (False, True)}
    results["cosine_mean_raw"] = {k: float(v[False].mean()) for k, v in cos.items()}
    results["cosine_std_raw"] = {k: float(v[False].std()) for k, v in cos.items()}
    results["cosine_mean_centred"] = {k: float(v[True].mean()) for k, v in cos.items()}
    results["cosine_std_centred"] = {k: float(v[True].std()) for k, v in cos.items()}
    results["mean_embedding_norm_ratio"] = centred_norm_ratio(W_E)

    # token properties
    props: dict[str, torch.Tensor]
    if tok is not None:
        props = token_properties([strings[i] for i in kept_ids])
        props.pop("alpha")
    else:  # token ids as numbers: value and parity
        ids = torch.tensor(kept_ids)
        props = {"value": ids.double(), "even": ids % 2 == 0}
    reg = {"C": [0.01, 0.1, 1.0, 10.0], "alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]}  # chosen by cross-validation
    pp = property_probes(W_E, props, n_splits=s.n_splits, seed=s.seed, **reg)
    pp0 = property_probes(W_E0, props, n_splits=s.n_splits, seed=s.seed, **reg) if W_E0 is not None else {}
    results["property_probe"] = {k: [r.mean, pp0[k].mean if k in pp0 else None] for k, r in pp.items()}
    results["property_probe_chance"] = {k: r.chance for k, r in pp.items()}

    # relation vectors: country -> capital, where both are single tokens
    pairs = []
    if tok is not None:
        for country, capital in COUNTRIES:
            a, b = tok.encode(" " + country).ids, tok.encode(" " + capital).ids
            a = [t for t in a if strings[t] != BOS]
            b = [t for t in b if strings[t] != BOS]
            if len(a) == 1 and len(b) == 1:
                pairs.append((a[0], b[0]))
    results["relation_pairs"] = len(pairs)
    if len(pairs) >= 3:
        results["relation"] = {"trained": relation_consistency(W_E_all, pairs, g)}
        if init is not None:
            results["relation"]["random init"] = relation_consistency(init.W_E.detach(), pairs, g)

    # context: truncation similarity per layer and category; word-index probe
    if rows is not None and tok is not None:
        seqs = rows[: s.n_eval_sequences]
        L = model.cfg.n_layers
        sites = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
        bos = [strings.index(BOS)] if BOS in strings else []
        cats = np.array([_categories([strings[t] for t in row]) for row in seqs.tolist()])
        trunc: dict[str, dict[str, float]] = {}
        for site in sites[1:]:
            sim = to_host(truncation_similarity(model, seqs, site, prefix=bos)).numpy()
            trunc[site] = {c: float(np.nanmean(sim[cats == c])) for c in sorted(set(cats.flatten()) - {"bos"})
                           if np.isfinite(sim[cats == c]).any()}
        results["truncation_similarity"] = trunc
        # index within word, on alphabetic tokens, all positions, per layer
        idx = torch.tensor([index_in_word([strings[t] for t in row]) for row in seqs.tolist()])
        alpha = torch.tensor(np.isin(cats, ["word start", "word continuation"]))
        per_pos = to_host(site_activations(model, seqs, sites, position=None))  # {site: [N, P, d]}
        acts = {site: a.transpose(0, 1).flatten(0, 1) for site, a in per_pos.items()}  # position-major rows
        flat_idx = idx.T.reshape(-1)[alpha.T.reshape(-1)].clamp(max=2)
        wi = {site: probe(a[alpha.T.reshape(-1)], flat_idx, n_splits=s.n_splits, seed=s.seed) for site, a in acts.items()}
        results["word_index_probe"] = {k: v.mean for k, v in wi.items()}
        results["word_index_chance"] = next(iter(wi.values())).chance
        results["word_index_counts"] = {str(k): int((flat_idx == k).sum()) for k in range(3)}
    elif rows is not None:  # a task model without token strings: truncation by position only
        seqs = rows[: s.n_eval_sequences]
        trunc = {}
        for l in range(model.cfg.n_layers):
            sim = to_host(truncation_similarity(model, seqs, f"blocks.{l}.hook_resid_post")).numpy()
            trunc[f"blocks.{l}.hook_resid_post"] = {f"position {p}": float(np.nanmean(sim[:, p]))
                                                    for p in range(1, sim.shape[1])}
        results["truncation_similarity"] = trunc
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results.update(placement.record())
    write_results(out, results)
    path = _report(results, cos, pp, pp0).save(out / "report.html")
    line = (f"embeddings ({source}): mean cosine raw {results['cosine_mean_raw']['trained']:.3f}, centred "
            f"{results['cosine_mean_centred']['trained']:.3f}; property probes " + ", ".join(
                f"{k} {v[0]:.2f}" for k, v in results["property_probe"].items()))
    if "relation" in results:
        rel = results["relation"]["trained"]
        line += f"; capital - country cosine {rel['mean_cosine']:.2f} (shuffled {rel['shuffled_cosine']:.2f})"
    if "word_index_probe" in results:
        line += "; word-index probe " + ", ".join(f"{k.replace('hook_', '')} {v:.2f}"
                                                 for k, v in results["word_index_probe"].items())
    print(line + f"; report: {path}")
    return results


def _token_strings(tok: Any, V: int) -> list[str]:
    if tok is None:
        return [str(i) for i in range(V)]
    if hasattr(tok, "id_to_token"):  # a `tokenizers` Tokenizer
        return [tok.id_to_token(i) or "" for i in range(V)]
    return [str(x) for x in tok.convert_ids_to_tokens(list(range(V)))]  # a transformers tokenizer


def _report(results: dict[str, Any], cos: dict[str, dict[bool, torch.Tensor]], pp: dict[str, Any],
            pp0: dict[str, Any]) -> Report:
    r = Report("Embedding puzzles", subtitle=f"Model: {results['source']}")
    nums: dict[str, Any] = {"mean cosine (raw)": results["cosine_mean_raw"]["trained"],
                            "mean cosine (centred)": results["cosine_mean_centred"]["trained"],
                            "|mean embedding| / mean centred norm": results["mean_embedding_norm_ratio"]}
    if "relation" in results:
        nums["capital - country cosine"] = results["relation"]["trained"]["mean_cosine"]
    r.numbers(nums)

    r.section("Pairwise cosine similarity of token embeddings")
    r.text(f"{results['n_tokens_analysed']} of {results['d_vocab']} tokens are analysed (those seen often enough in "
           f"the text, when it is known). Mean cosine {results['cosine_mean_raw']['trained']:.3f} raw and "
           f"{results['cosine_mean_centred']['trained']:.3f} after subtracting the mean embedding, whose norm is "
           f"{results['mean_embedding_norm_ratio']:.2f} times the mean norm of the centred embeddings: a ratio near "
           "or above 1 means one shared direction makes all tokens look alike until it is removed.")
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
    r.text("A property is linearly encoded when the probe on the trained embeddings beats both chance and the same "
           "probe on the randomly initialised embeddings (which can only memorise, not generalise to held-out "
           "tokens). Regularisation is chosen by cross-validation inside each training split.")
    r.table(["property", "probe (trained)", "std", "probe (random init)", "chance", "score"],
            [[k, v.mean, v.std, pp0[k].mean if k in pp0 else "", v.chance, "accuracy" if v.kind == "logistic" else "R^2"]
             for k, v in pp.items()],
            caption="Test score over random splits of the vocabulary (logistic: accuracy; ridge: R^2).")
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(pp)
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [pp[k].mean for k in names], 0.4, label="trained")
    if pp0:
        ax.bar(xs + 0.2, [pp0[k].mean if k in pp0 else 0 for k in names], 0.4, label="random init")
    ax.scatter(xs, [pp[k].chance for k in names], color="k", marker="_", s=300, label="chance", zorder=3)
    ax.set_xticks(xs, names)
    ax.set_ylabel("test accuracy / R^2")
    ax.legend(fontsize=8)
    r.figure(fig, caption="Probe scores per token property.")

    if "relation" in results:
        r.section("Relation vectors: capital - country")
        rel = results["relation"]
        t = rel["trained"]
        verdict = "consistent" if t["mean_cosine"] > t["shuffled_cosine"] + 0.1 else "no more consistent than chance"
        r.text(f"The relation vectors e(capital) - e(country) have mean cosine {t['mean_cosine']:.3f} with each other, "
               f"against {t['shuffled_cosine']:.3f} when capitals are paired with the wrong countries: {verdict}. "
               f"Analogy accuracy (e(country) + the mean relation vector of the other pairs lands nearest its own "
               f"capital) is {t['analogy_acc']:.2f}, chance {t['chance']:.2f}.")
        r.table(["embeddings", "mean cosine of relation vectors", "shuffled pairing", "analogy accuracy", "chance"],
                [[k, v["mean_cosine"], v["shuffled_cosine"], v["analogy_acc"], v["chance"]] for k, v in rel.items()],
                caption=f"{results['relation_pairs']} country/capital pairs that are single tokens.")
    if "truncation_similarity" in results:
        r.section("Residual stream with and without preceding context")
        tr = results["truncation_similarity"]
        r.text("A low cosine means the token's representation at that layer depends on its context; tokens that only "
               "make sense inside a word (continuations) are expected to depend on context more than word starts and "
               "punctuation.")
        layers = list(tr)
        cats = sorted({c for v in tr.values() for c in v})
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        for c in cats:
            ax.plot(range(len(layers)), [tr[layer].get(c, np.nan) for layer in layers], "o-", label=c)
        ax.set_xticks(range(len(layers)), [x.replace("blocks.", "").replace("hook_", "") for x in layers])
        ax.set_ylabel("cosine(with context, alone)")
        ax.legend(fontsize=8)
        r.figure(fig, caption="Mean cosine between a token's residual stream in its sentence and with the context "
                              "removed (the token alone after BOS), per layer and token category.")
        r.table(["site"] + cats, [[layer] + [tr[layer].get(c, "") for c in cats] for layer in layers])
    if "word_index_probe" in results:
        r.section("Probe for a token's index within its word")
        wi = results["word_index_probe"]
        r.text("At the embedding the probe can only use the token's identity (e.g. tokens with a leading space always "
               "start a word); accuracy above that level in later layers is positional information the model computes "
               "from context. Chance is the majority class.")
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(range(len(wi)), list(wi.values()), "o-")
        ax.axhline(results["word_index_chance"], color="gray", ls="--", lw=1, label="chance")
        ax.set_xticks(range(len(wi)), [x.replace("blocks.", "").replace("hook_", "") for x in wi])
        ax.set_ylabel("probe test accuracy")
        ax.legend(fontsize=8)
        r.figure(fig, caption="Logistic probe for the index of a token within its word (0, 1, 2 or more), on the "
                              f"alphabetic tokens of held-out text (counts {results['word_index_counts']}).")
    return r


cli = study_command(
    Settings, run, {"full": FULL, "quick": QUICK}, settings_arg="settings",
    doc="Embedding puzzles: cosine structure, token properties, relation vectors, context and word position.",
    extra=[parameter("run_dir", Optional[Path], None, "A run directory with a transformer to analyse.", flag="--run"),
           parameter("model_name", Optional[str], None, "A Hugging Face model name or directory.", flag="--model")])


__all__ = ["Settings", "QUICK", "FULL", "run", "cli", "generate_text", "train_tokenizer", "train_standin_lm"]
